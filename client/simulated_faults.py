"""Simulated unreliable hospitals for the manifest's ClientApp, found only in a simulation.

``dropout-rate`` and ``straggler-rate`` make simulated hospitals fail or reply late. The
code that does it lives in ``simulations/`` (``simulations.unreliable``): a simulation
started by ``simulations.runner`` passes it to ``client.app.build_client_app`` as a mod;
the manifest's ``client.app:app`` (``flwr run .``) runs :func:`simulated_faults`, which
looks up the installed entry point ``unreliable`` in :data:`SIMULATION_MOD_GROUP` only for
a node Flower gave a ``partition-id`` and only when one of those rates is set. A deployed
hospital's node has no ``partition-id``: its messages pass straight through.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable, Mod

from common.config import parse_app_config
from common.plugins import installed_function

SIMULATION_MOD_GROUP = "fedclinic.simulation_mods"
UNRELIABLE_MOD = "unreliable"


def registered_unreliable_mod() -> Mod:
    """The installed ``unreliable`` mod; a one-line ConfigError if none is."""
    mod: Mod = installed_function(
        SIMULATION_MOD_GROUP,
        UNRELIABLE_MOD,
        "`dropout-rate` / `straggler-rate` need the simulator's mod ({entry}), which is not "
        "installed here; set both to 0 or reinstall fedclinic.",
    )
    return mod


def simulated_faults(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run the simulator's unreliable-hospital mod on a simulated node with faults set."""
    if "partition-id" not in context.node_config:
        return call_next(msg, context)
    settings = parse_app_config(dict(context.run_config)).adversary
    if settings.dropout_rate == 0.0 and settings.straggler_rate == 0.0:
        return call_next(msg, context)
    return registered_unreliable_mod()(msg, context, call_next)

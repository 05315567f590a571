"""Where a simulation's attackers come from, without the server importing the simulator.

With ``attack`` other than ``none``, the coordinator of a simulation tampers with the
attackers' train replies before validating them (``ValidatingStrategy``'s ``tamper``).
The code that does it lives in ``simulations/``: ``simulations.runner`` passes its factory
to :func:`server.app.federate`; under ``flwr run .`` it is the installed entry point
``simulated`` in :data:`ADVERSARY_GROUP` (``pyproject.toml``), looked up only when an
attack is configured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from flwr.app import ArrayRecord, Message
from flwr.serverapp import Grid

from common.config import AppConfig
from common.plugins import installed_function

ADVERSARY_GROUP = "fedclinic.adversaries"
SIMULATED_ADVERSARY = "simulated"


class Adversary(Protocol):
    """Tampers with train replies (a ``ReplyTamper``) and names the attacking hospitals."""

    def __call__(
        self, server_round: int, replies: Sequence[Message], reference: ArrayRecord
    ) -> list[Message]: ...

    def attackers(self) -> list[str]: ...


AdversaryFactory = Callable[[AppConfig, Grid], Adversary]


def registered_adversary() -> AdversaryFactory:
    """The installed ``simulated`` adversary; a one-line ConfigError if none is."""
    factory: AdversaryFactory = installed_function(
        ADVERSARY_GROUP,
        SIMULATED_ADVERSARY,
        "`attack` needs the simulator's adversary ({entry}), which is not installed here: "
        'attacks run only in simulations; set `attack = "none"` or reinstall fedclinic.',
    )
    return factory


def adversary_for(
    config: AppConfig, grid: Grid, factory: AdversaryFactory | None = None
) -> Adversary | None:
    """The run's adversary (None when ``attack`` is ``none``); ``factory`` None means the
    installed entry point."""
    if config.adversary.attack == "none":
        return None
    return (factory or registered_adversary())(config, grid)


def attackers_outcome(adversary: Adversary | None) -> dict[str, Any]:
    """``metrics.json``'s outcome field naming the attackers ({} without an attack)."""
    return {} if adversary is None else {"attackers": adversary.attackers()}

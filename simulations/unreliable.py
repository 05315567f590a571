"""Unreliable simulated hospitals: dropouts and stragglers, reproducible by ``seed``.

A client mod (``simulations.runner`` passes :func:`unreliable_hospital` to
``client.app.build_client_app``; for ``flwr run .`` it is the entry point ``unreliable`` in
``fedclinic.simulation_mods``). On each train request a simulated hospital draws its fault
for that round from ``(seed, round, partition-id)`` (:func:`fault_for`): with probability
``dropout-rate`` it raises, so its reply is an error (recorded ``failed``); otherwise, with
probability ``straggler-rate``, it waits ``straggler-delay`` seconds before training (past
``round-timeout`` it is recorded ``timeout``). Evaluate requests are left alone.

Under secure aggregation a round's train phase is four SecAgg+ stages; the hospital trains
only at ``collect_masked_vectors``, so faults fire there and nowhere else
(:func:`is_training_step`). Inside the ClientApp this mod only ever sees that stage, as a
contract train request (``client.secure_aggregation``); the check also holds wherever else
the mod is installed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from common.config import parse_app_config
from common.contract import CONFIG_KEY
from common.errors import RunError
from common.seeding import derive_seed

Fault = Literal["none", "drop", "straggle"]


class SimulatedDropoutError(RunError):
    """A simulated hospital that does not deliver this round (``dropout-rate``)."""

    public_reason = "simulated dropout (`dropout-rate`)"


def fault_for(
    seed: int, server_round: int, partition_id: int, dropout_rate: float, straggler_rate: float
) -> Fault:
    """The fault of hospital ``partition_id`` in ``server_round``: two independent draws,
    drop first (a hospital that drops does not also straggle)."""
    rng = np.random.default_rng(derive_seed(seed, "unreliable", server_round, partition_id))
    drop, late = rng.random(2)
    if drop < dropout_rate:
        return "drop"
    if late < straggler_rate:
        return "straggle"
    return "none"


def is_training_step(msg: Message) -> bool:
    """A train message on which the hospital trains: a plain one, or SecAgg+'s
    ``collect_masked_vectors`` stage (``secaggplus_mod`` removes the stage key before it
    calls the chain inside it, so a SecAgg+ message without one is at that stage)."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return False
    secagg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    if secagg is None:
        return True
    return secagg.get(Key.STAGE, Stage.COLLECT_MASKED_VECTORS) == Stage.COLLECT_MASKED_VECTORS


def unreliable_mod(sleep: Callable[[float], None]) -> Callable[..., Message]:
    """The mod, with ``sleep`` to wait (tests pass a recorder)."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if not is_training_step(msg) or "partition-id" not in context.node_config:
            return call_next(msg, context)
        config = parse_app_config(dict(context.run_config))
        settings = config.adversary
        request = msg.content.config_records.get(CONFIG_KEY)
        server_round = int(str(request.get("server-round", 0))) if request is not None else 0
        partition_id = int(context.node_config["partition-id"])
        fault = fault_for(
            config.seed,
            server_round,
            partition_id,
            settings.dropout_rate,
            settings.straggler_rate,
        )
        if fault == "drop":
            raise SimulatedDropoutError(
                f"hospital-{partition_id} drops out of round {server_round} (`dropout-rate`)"
            )
        if fault == "straggle":
            sleep(settings.straggler_delay)
        return call_next(msg, context)

    return mod


def unreliable_hospital(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The client mod of unreliable simulated hospitals (real waits)."""
    return unreliable_mod(time.sleep)(msg, context, call_next)

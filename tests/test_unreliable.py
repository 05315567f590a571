"""Unreliable simulated hospitals: reproducible faults, and none on a deployed hospital."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict, UserConfig

import common.plugins
from client.simulated_faults import simulated_faults
from common.errors import ConfigError
from simulations.unreliable import SimulatedDropoutError, fault_for, unreliable_mod
from tests.conftest import ROOT
from tests.factories import run_config

pytestmark = pytest.mark.usefixtures("task_identity")  # the tests build Flower messages
DEPLOYED: UserConfig = {"data-path": "/data/site", "site-name": "st-mary"}
PAIRS = [(r, p) for r in range(1, 41) for p in range(50)]  # 2000 (round, partition) pairs


def faults(seed: int, dropout: float, straggler: float) -> list[str]:
    return [fault_for(seed, r, p, dropout, straggler) for r, p in PAIRS]


def test_faults_are_reproducible_by_seed() -> None:
    first, again, other = faults(1, 0.3, 0.3), faults(1, 0.3, 0.3), faults(2, 0.3, 0.3)

    assert first == again
    assert first != other


@pytest.mark.parametrize(
    ("dropout", "straggler", "drops", "straggles"),
    [
        (0.0, 0.0, 0.0, 0.0),
        (0.3, 0.0, 0.3, 0.0),
        (0.0, 0.4, 0.0, 0.4),
        (0.2, 0.5, 0.2, 0.8 * 0.5),  # a hospital that drops does not also straggle
    ],
)
def test_fault_shares_follow_the_rates(
    dropout: float, straggler: float, drops: float, straggles: float
) -> None:
    drawn = faults(7, dropout, straggler)

    assert drawn.count("drop") / len(drawn) == pytest.approx(drops, abs=0.03)
    assert drawn.count("straggle") / len(drawn) == pytest.approx(straggles, abs=0.03)


def simulated(partition: int) -> UserConfig:
    return {"partition-id": partition, "num-partitions": 50}


def context(node_config: UserConfig, **overrides: Any) -> Context:
    return Context(
        run_id=1,
        node_id=1,
        node_config=node_config,
        state=RecordDict(),
        run_config=run_config(**overrides),
    )


def request(message_type: str, server_round: int) -> Message:
    config = ConfigRecord({"server-round": server_round})
    return Message(content=RecordDict({"config": config}), dst_node_id=1, message_type=message_type)


class Handler:
    """The rest of the ClientApp: records that it ran."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, msg: Message, context: Context) -> Message:
        self.calls += 1
        return msg


def first(kind: str, dropout: float, straggler: float) -> tuple[int, int]:
    return next((r, p) for r, p in PAIRS if fault_for(42, r, p, dropout, straggler) == kind)


@pytest.mark.parametrize(
    ("kind", "waits", "calls"),
    [("none", [], 1), ("straggle", [2.5], 1)],
)
def test_the_mod_waits_only_for_a_straggler(kind: str, waits: list[float], calls: int) -> None:
    # Prepare
    server_round, partition = first(kind, 0.0, 0.5)
    slept: list[float] = []
    handler = Handler()
    settings = {"straggler_rate": 0.5, "straggler_delay": 2.5, "seed": 42}

    # Execute
    unreliable_mod(slept.append)(
        request(MessageType.TRAIN, server_round), context(simulated(partition), **settings), handler
    )

    # Assert
    assert slept == waits
    assert handler.calls == calls


def test_a_dropout_raises_before_training() -> None:
    server_round, partition = first("drop", 0.5, 0.0)
    handler = Handler()
    node = context(simulated(partition), dropout_rate=0.5, seed=42)

    with pytest.raises(SimulatedDropoutError) as raised:
        unreliable_mod(pytest.fail)(request(MessageType.TRAIN, server_round), node, handler)

    assert str(raised.value) == (
        f"hospital-{partition} drops out of round {server_round} (`dropout-rate`)"
    )
    assert handler.calls == 0


@pytest.mark.parametrize(
    ("message_type", "node_config"),
    [(MessageType.EVALUATE, simulated(0)), (MessageType.TRAIN, DEPLOYED)],
)
def test_evaluation_and_deployed_nodes_are_left_alone(
    message_type: str, node_config: UserConfig
) -> None:
    handler = Handler()
    node = context(node_config, dropout_rate=0.99, straggler_rate=0.99, straggler_delay=9.0)

    unreliable_mod(pytest.fail)(request(message_type, 1), node, handler)

    assert handler.calls == 1


# --- the manifest's ClientApp reaches it only on simulated nodes -----------------------------


@pytest.mark.parametrize(
    ("node_config", "overrides"),
    [
        (DEPLOYED, {"dropout_rate": 0.99, "attack": "sign-flip", "attack_fraction": 0.4}),
        (simulated(0), {}),
    ],
)
def test_no_lookup_without_a_simulated_node_with_faults(
    monkeypatch: pytest.MonkeyPatch, node_config: UserConfig, overrides: dict[str, Any]
) -> None:
    monkeypatch.setattr(common.plugins, "entry_points", pytest.fail)
    handler = Handler()

    simulated_faults(request(MessageType.TRAIN, 1), context(node_config, **overrides), handler)

    assert handler.calls == 1


def test_a_simulated_node_with_faults_runs_the_installed_mod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[str] = []

    class Point:
        def load(self) -> Any:
            return lambda msg, ctx, call_next: ran.append("unreliable") or call_next(msg, ctx)

    monkeypatch.setattr(common.plugins, "entry_points", lambda **_: [Point()])
    handler = Handler()

    simulated_faults(
        request(MessageType.TRAIN, 1), context(simulated(3), straggler_rate=0.1), handler
    )

    assert ran == ["unreliable"]
    assert handler.calls == 1


def test_faults_without_the_simulator_are_one_config_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(common.plugins, "entry_points", lambda **_: ())

    with pytest.raises(ConfigError) as raised:
        simulated_faults(
            request(MessageType.TRAIN, 1), context(simulated(3), dropout_rate=0.1), Handler()
        )

    assert str(raised.value) == (
        "`dropout-rate` / `straggler-rate` need the simulator's mod (entry point `unreliable` "
        "in `fedclinic.simulation_mods`), which is not installed here; set both to 0 or "
        "reinstall fedclinic."
    )


DEPLOYED_RUN = """
import sys
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict, UserConfig
from flwr.supercore.task_identity import TaskIdentity
import client.app
from client.simulated_faults import simulated_faults
from tests.factories import run_config

TaskIdentity.task_id = 1
TaskIdentity.run_id = 1
TaskIdentity.node_id = 1

values = run_config(attack="sign-flip", attack_fraction=0.4, dropout_rate=0.99,
                    straggler_rate=0.99, straggler_delay=60.0)
node = Context(run_id=1, node_id=1, node_config={"data-path": "/d", "site-name": "s"},
               state=RecordDict(), run_config=values)
msg = Message(content=RecordDict({"config": ConfigRecord({"server-round": 1})}),
              dst_node_id=1, message_type=MessageType.TRAIN)
client.app.build_client_app()  # the manifest's app, as a deployed hospital builds it
simulated_faults(msg, node, lambda m, c: m)
print(sorted(m for m in sys.modules if m.startswith("simulations")))
"""


def test_a_deployed_hospital_never_loads_attack_or_fault_code() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", DEPLOYED_RUN], cwd=ROOT, capture_output=True, text=True, check=False
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "[]"

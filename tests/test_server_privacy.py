"""Hospital-level DP at the coordinator, against a fake grid (no Ray, no training).

Every ε is checked against ``dp-accounting`` called directly here (a Gaussian release per
round, composed with its RDP accountant), never through fedclinic's or Flower's wrappers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from dp_accounting import dp_event, rdp
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from common.config import parse_app_config
from common.errors import ConfigError, RunError
from server.app import build_validating_strategy, federate
from server.checkpoint import checkpoint_path, innermost, list_checkpoints, read_checkpoint
from server.loop import run_federation
from server.privacy import uniform_copy, with_hospital_dp
from tests.factories import app_config, coordinator_config
from tests.fake_grid import FakeGrid, answers

HOSPITALS = 3
DELTA = 1e-5


def oracle_epsilon(noise_multiplier: float, releases: int, delta: float = DELTA) -> float:
    """ε of ``releases`` Gaussian releases at ``delta``, by dp-accounting alone."""
    accountant = rdp.RdpAccountant()
    for _ in range(releases):
        accountant.compose(dp_event.GaussianDpEvent(noise_multiplier))
    return float(accountant.get_epsilon(delta))


def clipping(offset: float, examples: int = 10) -> Any:
    """A hospital with Flower's ``fixedclipping_mod``: moves every weight by ``offset``,
    then clips its update to the norm the coordinator sent."""
    inner = answers(offset)

    def train(request: Message, _: Context) -> Message:
        reply = inner(request)
        if request.metadata.message_type == "train":
            reply.content.metric_records["metrics"]["num-examples"] = examples
        return reply

    def behaviour(request: Message) -> Message:
        if request.metadata.message_type != "train":
            return inner(request)
        return fixedclipping_mod(request, cast(Context, None), train)

    return behaviour


def hospitals(offset: float = 1.0) -> FakeGrid:
    return FakeGrid(dict.fromkeys(range(1, HOSPITALS + 1), clipping(offset)))


def hospital_values(run_dir: Path, rounds: int, resume: bool, **overrides: Any) -> dict[str, Any]:
    return coordinator_config(
        run_dir, rounds, HOSPITALS, resume, dp="hospital", dp_delta=DELTA, **overrides
    )


def run_hospital_dp(
    run_dir: Path, rounds: int, resume: bool = False, grid: FakeGrid | None = None, **over: Any
) -> FakeGrid:
    values = hospital_values(run_dir, rounds, resume, **over)
    grid = grid or hospitals()
    federate(grid, parse_app_config(values), values, run_dir.parent)
    return grid


def metrics(run_dir: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((run_dir / "metrics.json").read_text()))


def start() -> ArrayRecord:
    return ArrayRecord([np.zeros((2, 2), np.float32), np.ones(3, np.float32)])


@pytest.mark.usefixtures("task_identity")
def test_each_round_records_the_accountants_epsilon(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    run_hospital_dp(run_dir, rounds=3, dp_noise_multiplier=1.5, dp_epsilon=100.0)

    recorded = [r["privacy"] for r in metrics(run_dir)["rounds"]]
    assert recorded == [
        {
            "mode": "hospital",
            "delta": DELTA,
            "epsilon": pytest.approx(oracle_epsilon(1.5, k), rel=1e-9),
            "noise_multiplier": 1.5,
        }
        for k in (1, 2, 3)
    ]


@pytest.mark.usefixtures("task_identity")
def test_resume_continues_the_same_epsilon(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"dp_noise_multiplier": 1.2, "dp_epsilon": 100.0}
    run_hospital_dp(tmp_path / "straight", rounds=3, **settings)
    run_hospital_dp(tmp_path / "resumed", rounds=2, **settings)

    grid = run_hospital_dp(tmp_path / "resumed", rounds=3, resume=True, **settings)

    straight = metrics(tmp_path / "straight")["rounds"][-1]["privacy"]["epsilon"]
    resumed = metrics(tmp_path / "resumed")["rounds"][-1]["privacy"]["epsilon"]
    assert len(grid.timeouts) == 3  # only round 3 ran (train, validation and evaluate)
    assert resumed == straight == pytest.approx(oracle_epsilon(1.2, 3), rel=1e-9)
    saved = read_checkpoint(checkpoint_path(tmp_path / "resumed", 3)).privacy
    assert saved is not None
    assert len(saved["compositions"]) == 3


@pytest.mark.usefixtures("task_identity")
def test_resume_refuses_other_dp_settings(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_hospital_dp(run_dir, rounds=2, dp_noise_multiplier=1.2, dp_epsilon=100.0)

    with pytest.raises(RunError) as caught:
        run_hospital_dp(run_dir, rounds=3, resume=True, dp_noise_multiplier=2.0, dp_epsilon=100.0)

    assert str(caught.value) == (
        f"Cannot resume from {checkpoint_path(run_dir, 2)}: it was made with "
        "`dp-noise-multiplier`=1.2, this run has `dp-noise-multiplier`=2.0."
    )


@pytest.mark.usefixtures("task_identity")
def test_budget_exhaustion_ends_the_run_in_one_line_and_keeps_the_checkpoint(
    tmp_path: Path,
) -> None:
    run_dir, sigma = tmp_path / "run", 1.0
    target = (oracle_epsilon(sigma, 2) + oracle_epsilon(sigma, 3)) / 2  # round 3 is over it
    expected = (
        f"Privacy budget exhausted: round 3 would raise ε to {oracle_epsilon(sigma, 3):.3g} > "
        f"`dp-epsilon` {target:g} (δ=1e-05). The checkpoint of round 2 remains."
    )

    grid = hospitals()

    with pytest.raises(RunError) as caught:
        run_hospital_dp(run_dir, rounds=4, grid=grid, dp_noise_multiplier=sigma, dp_epsilon=target)

    assert str(caught.value) == expected
    assert len(grid.timeouts) == 2 * 3  # round 3 sent nothing
    assert [p.name for p in list_checkpoints(run_dir)] == ["round-00002.npz", "round-00001.npz"]
    assert metrics(run_dir)["outcome"] == {"status": "failed", "message": expected}


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize(("target", "rounds"), [(1.0, 3), (3.0, 5), (8.0, 2)])
def test_calibrated_noise_never_exceeds_the_target(target: float, rounds: int) -> None:
    config = app_config(
        num_server_rounds=rounds,
        min_train_nodes=HOSPITALS,
        min_available_nodes=HOSPITALS,
        min_evaluate_nodes=HOSPITALS,
        dp="hospital",
        dp_epsilon=target,
        dp_delta=DELTA,
        dp_noise_multiplier=0.0,
    )
    records: list[dict[str, Any]] = []

    run_federation(
        hospitals(0.1),
        build_validating_strategy(config),
        start(),
        config,
        1,
        lambda _round, _arrays, record: records.append(record["privacy"]),
    )

    sigma = records[0]["noise_multiplier"]
    epsilons = [r["epsilon"] for r in records]
    assert epsilons == [
        pytest.approx(oracle_epsilon(sigma, k), rel=1e-9) for k in range(1, 1 + rounds)
    ]
    assert max(epsilons) <= target
    assert epsilons[-1] >= 0.99 * target  # calibrated, not merely safe


@pytest.mark.usefixtures("task_identity")
def test_flower_sees_equal_weights_while_metrics_keep_the_real_sizes() -> None:
    np.random.seed(0)
    grid = FakeGrid({1: clipping(0.1, examples=10), 2: clipping(0.3, examples=30)})
    config = app_config(
        num_server_rounds=1,
        dp="hospital",
        dp_noise_multiplier=0.01,
        dp_epsilon=1e9,
    )
    kept: list[tuple[ArrayRecord, dict[str, Any]]] = []

    run_federation(
        grid,
        build_validating_strategy(config),
        start(),
        config,
        1,
        lambda _round, arrays, record: kept.append((arrays, record)),
    )

    arrays, record = kept[0]
    moved = np.concatenate(
        [
            (new - old).ravel()
            for new, old in zip(
                arrays.to_numpy_ndarrays(), start().to_numpy_ndarrays(), strict=True
            )
        ]
    )
    noise_std = 0.01 * 1.0 / 2 / np.sqrt(moved.size)  # std of the mean of the noise
    assert float(moved.mean()) == pytest.approx((0.1 + 0.3) / 2, abs=5 * noise_std)
    assert record["train"]["loss"] == pytest.approx(0.5)  # both report 0.5
    examples = [n["metrics"]["num-examples"] for n in record["nodes"]["train"].values()]
    assert sorted(examples) == [10, 30]  # recorded as the hospitals sent them


@pytest.mark.usefixtures("task_identity")
def test_an_unclipped_update_stops_the_round_and_says_why() -> None:
    grid = FakeGrid({1: clipping(0.1), 2: answers(5.0)})  # hospital 2 has no clipping mod
    config = app_config(num_server_rounds=1, dp="hospital", dp_epsilon=100.0)

    with pytest.raises(RunError) as caught:
        run_federation(grid, build_validating_strategy(config), start(), config, 1, lambda *_: None)

    norm = 5.0 * np.sqrt(7)
    assert str(caught.value) == (
        "Round 1 stopped the run: 1 of 2 hospitals sent a valid update (0 failed, 0 timed out, "
        "1 rejected); hospital-level DP aggregates only when all 2 sampled hospitals "
        "(`min-train-nodes`) send a valid update. Why: site-2 rejected: update norm "
        f"{norm:.4g} exceeds `dp-clip-norm` 1 (hospital-level DP needs every hospital to clip "
        "its update: Flower's fixedclipping_mod). No round completed, so there is no checkpoint."
    )


@pytest.mark.usefixtures("task_identity")
def test_each_round_trains_exactly_min_train_nodes_hospitals() -> None:
    grid = FakeGrid(dict.fromkeys(range(1, 6), clipping(0.1)))
    config = app_config(num_server_rounds=2, dp="hospital", dp_epsilon=100.0, fraction_train=1.0)
    records: list[dict[str, Any]] = []

    run_federation(
        grid,
        build_validating_strategy(config),
        start(),
        config,
        1,
        lambda _round, _arrays, record: records.append(record),
    )

    assert [r["participation"]["sampled"] for r in records] == [2, 2]  # min-train-nodes


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_checkpoints_find_the_strategy_under_every_wrapper(name: str) -> None:
    config = app_config(strategy=name, dp="hospital", dp_epsilon=3.0)

    inner = innermost(build_validating_strategy(config))

    assert type(inner) is {"fedavg": FedAvg, "fedprox": FedProx}[name]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"min_train_nodes": 3, "min_available_nodes": 2},
            "Invalid value for `min-train-nodes`. Expected at most `min-available-nodes` (2) "
            "when `dp` is 'hospital' (each round samples exactly `min-train-nodes` hospitals "
            "from them). Received: 3",
        ),
    ],
)
def test_unsupported_settings_are_refused_in_one_line(
    overrides: dict[str, Any], expected: str
) -> None:
    config = app_config(dp="hospital", dp_epsilon=3.0, **overrides)

    with pytest.raises(ConfigError) as caught:
        build_validating_strategy(config)

    assert str(caught.value) == expected


def test_flowers_refusals_become_one_config_line() -> None:
    config = app_config(dp="hospital", dp_epsilon=3.0, dp_noise_multiplier=1.0)

    with pytest.raises(ConfigError) as caught:
        with_hospital_dp(FedAdam(), config)

    assert str(caught.value) == (
        "Cannot use hospital-level DP (`dp`='hospital') with these settings: Fixed-clipping "
        "accounting currently requires a strategy using FedAvg.aggregate_train."
    )


@pytest.mark.usefixtures("task_identity")
def test_the_uniform_copy_leaves_the_reply_as_it_came() -> None:
    request = Message(
        RecordDict({"arrays": start(), "config": ConfigRecord()}),
        dst_node_id=1,
        message_type="train",
    )
    reply = answers(0.1)(request)
    sent = dict(reply.content.metric_records["metrics"])

    copy = uniform_copy(reply)

    assert dict(copy.content.metric_records["metrics"]) == {**sent, "num-examples": 1}
    assert dict(reply.content.metric_records["metrics"]) == sent
    assert copy.metadata is reply.metadata

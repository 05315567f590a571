"""The coordinator's SecAgg+ train phase, in-process: Flower's real workflow on the server,
Flower's real ``secaggplus_mod`` on each node (tests/secagg_fakes.py), no Ray."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.common import parameters_to_ndarrays
from flwr.common.serde import message_to_proto
from flwr.server.workflow import SecAggPlusWorkflow

from common.config import AppConfig
from common.errors import RunError
from common.secure_aggregation import next_scale
from server.app import build_validating_strategy
from server.checkpoint import checkpoint_remains
from server.loop import run_round
from server.secagg_settings import (
    INITIAL_MAX_WEIGHT,
    check_sum_fits,
    initial_scale,
    round_settings,
)
from server.secagg_workflow import FedclinicSecAggPlus, ShimStrategy, run_secagg_workflow
from server.train_phase import message_bytes
from tests.factories import app_config
from tests.fake_grid import FakeGrid, answers
from tests.secagg_fakes import (
    Fault,
    SecAggGrid,
    num_examples,
    start_arrays,
    update_of,
    weighted_mean,
)

NODES = (1, 2, 3, 4, 5)
CLIP, Q = 8.0, 2**22


def secure_config(**overrides: Any) -> AppConfig:
    values: dict[str, Any] = {
        "secure_aggregation": True,
        "min_train_nodes": 3,
        "min_available_nodes": 5,
    }
    return app_config(**{**values, **overrides})


def quantization_bound(contributors: Iterable[int], scale: float, max_weight: float) -> float:
    """The largest |secure − plain weighted FedAvg| one coordinate may show.

    With step = 2·clip/Q, contributor i's value (n_i/MW)·s·Δ_i is stochastically rounded
    to a level (error < step), so the unmasked sum is off by < k·step and the mean, divided
    by s·Σw' (w'_i = round(Q·n_i/MW)/Q, the weights secaggplus_mod quantizes), by
    < k·step / (s·Σw'). Quantizing the weights (|w'_i − w_i| ≤ 1/(2Q)) moves a weighted mean
    of values bounded by D = max|Δ_i| by at most D·k / (Q·Σw'). Plus one float32 rounding
    of the new global weight (≤ 2^-24 · 2D).
    """
    ids = list(contributors)
    k = len(ids)
    step = 2 * CLIP / Q
    total = sum(round(Q * num_examples(n) / max_weight) / Q for n in ids)
    largest = max(float(np.max(np.abs(a))) for n in ids for a in update_of(n))
    return k * step / (scale * total) + largest * k / (Q * total) + 2.0**-24 * 2 * largest


def max_diff(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(a - b))) for a, b in zip(got, want, strict=True))


def secure_round(grid: SecAggGrid, config: AppConfig, **kwargs: Any) -> Any:
    strategy = build_validating_strategy(config)
    return run_round(grid, strategy, ArrayRecord(start_arrays()), 1, config, **kwargs)


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize(
    ("faults", "contributors", "status", "dropouts"),
    [
        ((), NODES, {}, {"before-masking": 0, "after-masking": 0}),
        (
            (Fault(1, "collect_masked_vectors"),),
            (2, 3, 4, 5),
            {"1": ("failed", "collect_masked_vectors")},
            {"before-masking": 0, "after-masking": 1},
        ),
        (
            (Fault(1, "collect_masked_vectors", silent=True),),
            (2, 3, 4, 5),
            {"1": ("timeout", "collect_masked_vectors")},
            {"before-masking": 0, "after-masking": 1},
        ),
        (
            (Fault(2, "share_keys"),),  # upstream Flower 1.42 halts here
            (1, 3, 4, 5),
            {"2": ("failed", "share_keys")},
            {"before-masking": 1, "after-masking": 0},
        ),
        (
            (Fault(3, "setup", silent=True), Fault(4, "collect_masked_vectors")),
            (1, 2, 5),
            {"3": ("timeout", "setup"), "4": ("failed", "collect_masked_vectors")},
            {"before-masking": 1, "after-masking": 1},
        ),
    ],
)
def test_the_secure_aggregate_is_the_weighted_fedavg_of_the_hospitals_in_the_sum(
    faults: tuple[Fault, ...],
    contributors: tuple[int, ...],
    status: dict[str, tuple[str, str]],
    dropouts: dict[str, int],
) -> None:
    config = secure_config()
    scale = initial_scale(config, INITIAL_MAX_WEIGHT)

    outcome = secure_round(SecAggGrid(faults=faults), config)

    diff = max_diff(outcome.arrays.to_numpy_ndarrays(), weighted_mean(contributors))
    bound = quantization_bound(contributors, scale, INITIAL_MAX_WEIGHT)
    assert diff <= bound
    assert bound < 1e-3 * max(float(np.max(np.abs(a))) for a in weighted_mean(contributors))
    record = outcome.record
    nodes = record["nodes"]["train"]
    assert {n for n, o in nodes.items() if o["status"] == "ok"} == {str(n) for n in contributors}
    assert {n: (o["status"], o["stage"]) for n, o in nodes.items() if "stage" in o} == status
    assert record["participation"] == {
        "sampled": 5,
        "ok": len(contributors),
        "failed": sum(s == "failed" for s, _ in status.values()),
        "timeout": sum(s == "timeout" for s, _ in status.values()),
        "rejected": 0,
    }
    block = record["secure-aggregation"]
    assert block["contributors"] == len(contributors)
    assert block["dropouts"] == dropouts
    assert (block["scale"], block["max-weight"]) == (scale, INITIAL_MAX_WEIGHT)
    assert (block["clipping-range"], block["quantization-range"]) == (CLIP, Q)
    assert set(block["stage-seconds"]) == {
        "setup",
        "share_keys",
        "collect_masked_vectors",
        "unmask",
    }
    assert block["range-use-max"] == pytest.approx(
        max(
            scale * num_examples(n) / INITIAL_MAX_WEIGHT * np.max(np.abs(np.concatenate(
                [u.ravel() for u in update_of(n)]))) / CLIP
            for n in contributors
        )
    )  # fmt: skip
    assert record["train-bytes"]["hospitals"] == 5
    model_bytes = sum(a.nbytes for a in start_arrays())
    assert record["train-bytes"]["sent"] > 5 * model_bytes  # the model goes to every node
    assert record["train-bytes"]["received"] > len(contributors) * model_bytes


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize(
    ("workflow", "completed"), [(SecAggPlusWorkflow, False), (FedclinicSecAggPlus, True)]
)
def test_a_dropout_before_masking_halts_upstream_but_not_our_workflow(
    workflow: type[SecAggPlusWorkflow], completed: bool
) -> None:
    """Regression: Flower 1.42 asks survivors for key shares they never received."""
    grid = SecAggGrid(faults=(Fault(1, "share_keys"),))
    timeouts = {"collect_timeout": 30.0, "stage_timeout": 30.0}
    kwargs: dict[str, Any] = timeouts if workflow is FedclinicSecAggPlus else {"timeout": 30.0}
    configs = {n: ConfigRecord({"secagg-scale": 1.0, "secagg-max-weight": 1000.0}) for n in NODES}

    result = run_secagg_workflow(
        grid,
        workflow(num_shares=1.0, reconstruction_threshold=0.6, **kwargs),
        1,
        ArrayRecord(start_arrays()),
        configs,
    )

    assert (result.aggregate is not None) == completed
    if completed:
        assert sorted(result.contributors) == [2, 3, 4, 5]


@pytest.mark.usefixtures("task_identity")
def test_the_strategy_never_receives_a_single_hospitals_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = secure_config()
    strategy = build_validating_strategy(config)
    reached: list[Message] = []
    shim_results: list[Any] = []
    validate = strategy.aggregate_train
    shim_aggregate = ShimStrategy.aggregate_fit

    def spy(server_round: int, replies: Iterable[Message]) -> Any:
        reached.extend(replies)
        return validate(server_round, reached)

    def shim_spy(self: ShimStrategy, server_round: int, results: Any, failures: Any) -> Any:
        shim_results.extend(res for _, res in results)
        return shim_aggregate(self, server_round, results, failures)

    monkeypatch.setattr(strategy, "aggregate_train", spy)
    monkeypatch.setattr(ShimStrategy, "aggregate_fit", shim_spy)
    outcome = run_round(SecAggGrid(), strategy, ArrayRecord(start_arrays()), 1, config)

    new_global = outcome.arrays.to_numpy_ndarrays()
    individual = [update_of(n) for n in NODES]
    assert len(reached) == 5
    for reply in reached:
        sent = reply.content.array_records["arrays"].to_numpy_ndarrays()
        assert max_diff(sent, new_global) <= 1e-9  # the same new global model for all
        assert all(max_diff(sent, own) > 1e-4 for own in individual)
    assert len(shim_results) == 5
    assert all(res.parameters is shim_results[0].parameters for res in shim_results)
    summed = parameters_to_ndarrays(shim_results[0].parameters)
    scale = initial_scale(config, INITIAL_MAX_WEIGHT)
    assert all(max_diff(summed, [scale * d for d in own]) > 1e-3 for own in individual)


@pytest.mark.usefixtures("task_identity")
def test_a_halted_workflow_stops_the_run_in_one_line() -> None:
    faults = tuple(Fault(n, "share_keys") for n in (1, 2, 3))  # 2 left, threshold 3 of 5

    with pytest.raises(RunError) as caught:
        secure_round(SecAggGrid(faults=faults), secure_config())

    dropped = "failed: RuntimeError: simulated dropout at share_keys"
    assert str(caught.value) == (
        "Round 1 stopped the run: 0 of 5 hospitals sent a valid update (5 failed, 0 timed "
        "out, 0 rejected); SecAgg+ unmasks the sum only while 3 of each hospital's 5 key "
        "shares can be collected (`secagg-reconstruction-threshold`). Why: "
        f"node-1 {dropped}; node-2 {dropped}; node-3 {dropped} (+2 more). "
        f"{checkpoint_remains(1)}"
    )


@pytest.mark.usefixtures("task_identity")
def test_a_plain_round_records_its_train_bytes() -> None:
    config = app_config(min_train_nodes=2, min_available_nodes=3)
    grid = FakeGrid({1: answers(1.0), 2: answers(2.0), 3: answers(3.0)})
    arrays = ArrayRecord(start_arrays())

    record = run_round(grid, build_validating_strategy(config), arrays, 1, config).record

    model_bytes = sum(a.nbytes for a in start_arrays())
    assert record["train-bytes"]["hospitals"] == 3
    assert 3 * model_bytes < record["train-bytes"]["sent"] < 3 * model_bytes + 3 * 2000
    assert 3 * model_bytes < record["train-bytes"]["received"] < 3 * model_bytes + 3 * 2000
    assert "secure-aggregation" not in record


def secagg_record(
    scale: float, used: float | None, saturated: int = 0, max_weight: float = 420.0
) -> dict[str, Any]:
    nodes = {"1": {"status": "ok", "metrics": {"num-examples": 420}}}
    block = {"scale": scale, "range-use-max": used, "saturated": saturated}
    block["max-weight"] = max_weight
    return {"nodes": {"train": nodes}, "secure-aggregation": block}


@pytest.mark.parametrize(
    ("history", "scale", "max_weight"),
    [
        ([], None, 1000.0),  # None: the initial scale
        ([secagg_record(10.0, 0.5)], next_scale(10.0, 0.5), 420.0),
        ([secagg_record(10.0, 0.01)], next_scale(10.0, 0.01), 420.0),
        ([secagg_record(10.0, 0.01, saturated=1)], next_scale(10.0, 0.5), 420.0),
        ([secagg_record(10.0, None)], 10.0, 420.0),  # nothing measured: unchanged
        # round 1 weighed with MW 1000, this round with 420: n/MW grows by 1000/420
        (
            [secagg_record(10.0, 0.05, max_weight=1000.0)],
            next_scale(10.0, 0.05 * 1000 / 420),
            420.0,
        ),
        ([secagg_record(10.0, 0.25), {"nodes": {"train": {}}}], next_scale(10.0, 0.25), 420.0),
    ],
)
def test_a_resumed_run_derives_scale_and_max_weight_from_its_history(
    history: list[dict[str, Any]], scale: float | None, max_weight: float
) -> None:
    config = secure_config()

    got = round_settings(history, config)

    assert got.max_weight == max_weight
    assert got.scale == pytest.approx(initial_scale(config, 1000.0) if scale is None else scale)


def test_hospital_level_dp_weighs_uniformly_with_an_exact_first_scale() -> None:
    config = secure_config(dp="hospital", min_train_nodes=3, min_available_nodes=3)

    got = round_settings([], config)

    assert got.max_weight == 1.0
    assert got.scale == pytest.approx(0.125 * CLIP / config.privacy.dp_clip_norm)


def test_a_sample_whose_quantized_sum_would_wrap_is_refused() -> None:
    with pytest.raises(RunError) as caught:
        check_sum_fits(1024, Q)

    assert str(caught.value) == (
        "1024 hospitals were sampled, but `secagg-quantization-range` 4194304 × 1024 ≥ "
        "2**32: their sum would wrap. Lower it to at most 4194303."
    )
    check_sum_fits(1023, Q)  # fits: no error


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize(
    ("nodes", "faults", "overrides"),
    [
        ((1, 2), (), {"min_train_nodes": 2, "min_available_nodes": 2}),  # the manifest's minimum
    ],
)
def test_a_sum_of_fewer_than_3_hospitals_is_never_used(
    nodes: tuple[int, ...], faults: tuple[Fault, ...], overrides: dict[str, Any]
) -> None:
    with pytest.raises(RunError) as caught:
        secure_round(SecAggGrid(nodes, faults=faults), secure_config(**overrides))

    rule = (
        "SecAgg+ aggregates at least 3 hospitals' updates (with 2, each could subtract its "
        "own update from the sum)"
    )
    assert rule in str(caught.value)
    assert "SecAgg+ needs at least 3 hospitals in the sum" in str(caught.value)


def _requests_and_replies() -> list[Message]:
    shared = RecordDict({"arrays": ArrayRecord(start_arrays()), "config": ConfigRecord({"a": 1})})
    requests = [Message(shared, dst_node_id=n, message_type="train") for n in (1, 2, 300)]
    own = [
        Message(RecordDict({"arrays": ArrayRecord([np.full(n * 70, n, np.float32)])}), reply_to=r)
        for n, r in zip((1, 2), requests, strict=False)
    ]
    failed = Message(Error(0, "simulated dropout"), reply_to=requests[2])
    return [*requests, *own, failed]


@pytest.mark.usefixtures("task_identity")
def test_message_bytes_is_flowers_serialized_size() -> None:
    messages = _requests_and_replies()

    counted = message_bytes(messages)

    assert counted == sum(message_to_proto(m).ByteSize() for m in messages)

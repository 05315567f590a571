"""Reply validation: exact reasons for bad train / evaluate replies, and the strategy wrapper."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.exception import InconsistentMessageReplies
from flwr.serverapp.strategy import FedAdam, FedAvg

from common.contract import DATA_KINDS
from server.aggregation import weighted_mean_ignoring_nan
from server.validation import ValidatingStrategy, reply_problem, update_norm, update_problem

TRAIN = MessageType.TRAIN
EVALUATE = MessageType.EVALUATE


def model_arrays() -> list[np.ndarray]:
    return [np.ones((2, 3), dtype=np.float32), np.zeros((3,), dtype=np.float32)]


def shifted(by: float) -> list[np.ndarray]:
    return [a + np.float32(by) for a in model_arrays()]


def site(name: str = "hospital-1", kind: str = "simulated-synthetic") -> ConfigRecord:
    return ConfigRecord({"site-name": name, "data-kind": kind})


def train_reply(
    arrays: list[np.ndarray] | ArrayRecord | None = None, /, **metrics: object
) -> RecordDict:
    """A contract-valid train reply, with ``metrics`` overriding (None: leave the key out)."""
    values = {"num-examples": 10, "loss": 0.5, "accuracy": 0.75, **metrics}
    record = arrays if isinstance(arrays, ArrayRecord) else ArrayRecord(arrays or model_arrays())
    return RecordDict(
        {
            "arrays": record,
            "metrics": MetricRecord({k: v for k, v in values.items() if v is not None}),  # type: ignore[misc]
            "site": site(),
        }
    )


def evaluate_reply(**metrics: object) -> RecordDict:
    values = {
        "num-examples": 5, "loss": 0.4, "accuracy": 0.8, "auc": 0.9,
        "sensitivity": 0.7, "specificity": 0.6, **metrics,
    }  # fmt: skip
    record = MetricRecord({k: v for k, v in values.items() if v is not None})  # type: ignore[misc]
    return RecordDict({"metrics": record, "site": site()})


def edited(content: RecordDict, **records: object) -> RecordDict:
    """``content`` with records replaced or added (None removes one)."""
    merged = {**dict(content.items()), **records}
    return RecordDict({k: v for k, v in merged.items() if v is not None})  # type: ignore[misc]


def renamed(content: RecordDict, old: str, new: str) -> RecordDict:
    return RecordDict({new if key == old else key: value for key, value in content.items()})


def with_nan() -> list[np.ndarray]:
    arrays = model_arrays()
    arrays[1][0] = np.nan
    return arrays


def with_inf() -> list[np.ndarray]:
    arrays = model_arrays()
    arrays[0][1, 2] = -np.inf
    return arrays


def unreadable() -> ArrayRecord:
    arrays = ArrayRecord(model_arrays())
    arrays["0"] = Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray", data=b"xx")
    return arrays


KINDS = ", ".join(DATA_KINDS)

TRAIN_CASES = [
    (train_reply(), None),
    (train_reply(auc=0.5), "record `metrics` keys: unexpected `auc`"),
    (train_reply(accuracy=None), "record `metrics` keys: missing `accuracy`"),
    (train_reply(**{"num-examples": None}), "record `metrics` keys: missing `num-examples`"),
    (renamed(train_reply(), "arrays", "weights"), "records: missing `arrays`, unexpected `weights`"),
    (renamed(train_reply(), "metrics", "results"), "records: missing `metrics`, unexpected `results`"),
    (edited(train_reply(), extra=MetricRecord({"x": 1.0})), "records: unexpected `extra`"),
    (edited(train_reply(), more=ArrayRecord(model_arrays())), "records: unexpected `more`"),
    (edited(train_reply(), debug=ConfigRecord({"path": "/data"})), "records: unexpected `debug`"),
    (edited(train_reply(), site=None), "records: missing `site`"),
    (edited(train_reply(), metrics=ConfigRecord({"num-examples": 10, "loss": 0.5, "accuracy": 0.7})),
     "record `metrics` is not a metric record"),
    (edited(train_reply(), site=ConfigRecord({"site-name": "h", "data-kind": "folder", "path": "/x"})),
     "record `site` keys: unexpected `path`"),
    (edited(train_reply(), site=site(name="../etc")),
     "`site.site-name` is not a site name (letters, digits, . _ -)"),
    (edited(train_reply(), site=site(kind="ct")), f"`site.data-kind` is not one of {KINDS}"),
    (train_reply(**{"num-examples": 0}), "metric `num-examples` is not a positive number"),
    (train_reply(**{"num-examples": math.nan}), "metric `num-examples` is not a positive number"),
    (train_reply(**{"num-examples": -3.0}), "metric `num-examples` is not a positive number"),
    (train_reply(loss=[0.1, 0.2]), "metric `loss` is not a scalar number"),
    (train_reply(accuracy=1.5, auc=0.1, **{"num-examples": 0}),
     "record `metrics` keys: unexpected `auc`; metric `num-examples` is not a positive number"),
    (train_reply(ArrayRecord({"w": Array(model_arrays()[0])})),
     "array names differ from the model's (1 vs 2 arrays)"),
    (train_reply([np.ones((3, 2), np.float32), np.zeros(3, np.float32)]),
     "array `0` is float32[3, 2], the model's is float32[2, 3]"),
    (train_reply([np.ones((2, 3), np.float64), np.zeros(3, np.float32)]),
     "array `0` is float64[2, 3], the model's is float32[2, 3]"),
    (train_reply(with_nan()), "array `1` contains NaN or Inf"),
    (train_reply(with_inf()), "array `0` contains NaN or Inf"),
    (train_reply(unreadable()), "array `0` cannot be read (ValueError)"),
    (train_reply(loss=math.nan), None),  # a metric may be undefined; the arrays are fine
]  # fmt: skip

EVALUATE_CASES = [
    (evaluate_reply(), None),
    (evaluate_reply(auc=math.nan), None),  # one class in the held-out split: AUC undefined
    (evaluate_reply(f1=0.5), "record `metrics` keys: unexpected `f1`"),
    (evaluate_reply(sensitivity=None), "record `metrics` keys: missing `sensitivity`"),
    (renamed(evaluate_reply(), "metrics", "results"), "records: missing `metrics`, unexpected `results`"),
    (edited(evaluate_reply(), extra=MetricRecord({"x": 1.0})), "records: unexpected `extra`"),
    (edited(evaluate_reply(), arrays=ArrayRecord(model_arrays())), "records: unexpected `arrays`"),
    (edited(evaluate_reply(), site=None), "records: missing `site`"),
    (evaluate_reply(**{"num-examples": -1}), "metric `num-examples` is not a positive number"),
    (evaluate_reply(auc=[0.9, 0.8]), "metric `auc` is not a scalar number"),
]  # fmt: skip


# (message type, reply, dp mode, expected): record-level DP adds the hospital's ε to a
# train reply's metrics, and only there; hospital-level DP keeps the plain contract.
DP_CASES = [
    (TRAIN, train_reply(epsilon=1.25), "record", None),
    (TRAIN, train_reply(), "record", "record `metrics` keys: missing `epsilon`"),
    (TRAIN, train_reply(epsilon=[1.0]), "record", "metric `epsilon` is not a scalar number"),
    (TRAIN, train_reply(epsilon=1.25), "off", "record `metrics` keys: unexpected `epsilon`"),
    (TRAIN, train_reply(epsilon=1.25), "hospital", "record `metrics` keys: unexpected `epsilon`"),
    (TRAIN, train_reply(), "hospital", None),
    (EVALUATE, evaluate_reply(), "record", None),
    (EVALUATE, evaluate_reply(epsilon=1.25), "record", "record `metrics` keys: unexpected `epsilon`"),
]  # fmt: skip


@pytest.mark.parametrize(("message_type", "content", "dp", "expected"), DP_CASES)
def test_reply_problem_under_dp(
    message_type: str, content: RecordDict, dp: str, expected: str | None
) -> None:
    reference = ArrayRecord(model_arrays())

    assert reply_problem(message_type, content, reference, 0.0, dp=dp) == expected


@pytest.mark.usefixtures("task_identity")
def test_the_wrapper_checks_replies_against_the_runs_dp_mode() -> None:
    inner = Recorder()
    strategy = ValidatingStrategy(inner, max_update_norm=0.0, min_valid_replies=1, dp="record")
    strategy.current_arrays = ArrayRecord(model_arrays())
    replies = [reply(1, train_reply(epsilon=0.5)), reply(2, train_reply())]

    strategy.aggregate_train(1, replies)

    assert inner.received == [1]
    assert strategy.rejected(1, TRAIN) == {2: "record `metrics` keys: missing `epsilon`"}


@pytest.mark.parametrize(
    ("update", "clip_norm", "expected"),
    [
        (shifted(1.0), 3.0, None),  # norm 3: exactly clipped
        (shifted(1.0 + 1e-7), 3.0, None),  # float32 rounding of a clipped update
        (shifted(1.01), 3.0,
         "update norm 3.03 exceeds `dp-clip-norm` 3 (hospital-level DP needs every hospital "
         "to clip its update: Flower's fixedclipping_mod)"),
        (shifted(100.0), 0.0, None),  # 0 = not hospital-level DP
    ],
)  # fmt: skip
def test_hospital_dp_rejects_unclipped_updates(
    update: list[np.ndarray], clip_norm: float, expected: str | None
) -> None:
    reference = ArrayRecord(model_arrays())

    assert update_problem(ArrayRecord(update), reference, 0.0, clip_norm) == expected


@pytest.mark.parametrize(("content", "expected"), TRAIN_CASES)
def test_train_reply_problem(content: RecordDict, expected: str | None) -> None:
    assert reply_problem(TRAIN, content, ArrayRecord(model_arrays()), 0.0) == expected


@pytest.mark.parametrize(("content", "expected"), EVALUATE_CASES)
def test_evaluate_reply_problem(content: RecordDict, expected: str | None) -> None:
    assert reply_problem(EVALUATE, content, ArrayRecord(model_arrays()), 0.0) == expected


def test_update_norm_matches_flattened_norm() -> None:
    rng = np.random.default_rng(0)
    reference: list[np.ndarray] = [rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=7)]
    update: list[np.ndarray] = [a + rng.normal(size=a.shape) for a in reference]

    flat = np.concatenate([(u - r).ravel() for u, r in zip(update, reference, strict=True)])

    assert update_norm(update, reference) == pytest.approx(float(np.linalg.norm(flat)))


@pytest.mark.parametrize(
    ("update", "max_norm", "expected"),
    [
        (model_arrays(), 0.0, None),
        (shifted(100.0), 0.0, None),  # 0 = no norm limit
        (shifted(1.0), 3.0, None),  # norm sqrt(9) = 3: at the limit is allowed
        (shifted(1.0), 2.5, "update norm 3 exceeds `max-update-norm` 2.5"),
        (with_inf(), 1e9, "array `0` contains NaN or Inf"),
    ],
)
def test_update_problem(update: list[np.ndarray], max_norm: float, expected: str | None) -> None:
    reference = ArrayRecord(model_arrays())

    assert update_problem(ArrayRecord(update), reference, max_norm) == expected


class Recorder(FedAvg):
    """Flower's FedAvg that remembers which replies reached its aggregation."""

    def __init__(self) -> None:
        super().__init__(
            train_metrics_aggr_fn=weighted_mean_ignoring_nan,
            evaluate_metrics_aggr_fn=weighted_mean_ignoring_nan,
        )
        self.received: list[int] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.received = [r.metadata.src_node_id for r in replies]
        return super().aggregate_train(server_round, replies)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        replies = list(replies)
        self.received = [r.metadata.src_node_id for r in replies]
        return super().aggregate_evaluate(server_round, replies)


def reply(node: int, payload: RecordDict | None, message_type: str = TRAIN) -> Message:
    request = Message(content=RecordDict(), dst_node_id=node, message_type=message_type)
    if payload is None:
        return Message(Error(0, "crashed"), reply_to=request)
    return Message(content=payload, reply_to=request)


def wrapped(inner: FedAvg, max_update_norm: float = 0.0, minimum: int = 1) -> ValidatingStrategy:
    strategy = ValidatingStrategy(inner, max_update_norm=max_update_norm, min_valid_replies=minimum)
    strategy.current_arrays = ArrayRecord(model_arrays())
    return strategy


INCONSISTENT_TRAIN = [
    (train_reply(auc=0.5), "record `metrics` keys: unexpected `auc`"),
    (train_reply(accuracy=None), "record `metrics` keys: missing `accuracy`"),
    (renamed(train_reply(), "arrays", "weights"), "records: missing `arrays`, unexpected `weights`"),
    (edited(train_reply(), more=ArrayRecord(model_arrays())), "records: unexpected `more`"),
    (edited(train_reply(), extra=MetricRecord({"x": 1.0})), "records: unexpected `extra`"),
]  # fmt: skip
INCONSISTENT_EVALUATE = [
    (evaluate_reply(f1=0.5), "record `metrics` keys: unexpected `f1`"),
    (evaluate_reply(auc=None), "record `metrics` keys: missing `auc`"),
    (edited(evaluate_reply(), extra=MetricRecord({"x": 1.0})), "records: unexpected `extra`"),
    (evaluate_reply(**{"num-examples": None}), "record `metrics` keys: missing `num-examples`"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "reason"), INCONSISTENT_TRAIN)
@pytest.mark.usefixtures("task_identity")
def test_a_train_reply_that_makes_flower_raise_is_rejected(bad: RecordDict, reason: str) -> None:
    replies = [reply(1, train_reply(shifted(1.0))), reply(2, bad), reply(3, train_reply())]
    with pytest.raises(InconsistentMessageReplies):  # Flower's own check, unwrapped
        Recorder().aggregate_train(1, replies)
    inner = Recorder()
    strategy = wrapped(inner)

    arrays, _ = strategy.aggregate_train(1, replies)

    assert strategy.rejected(1, TRAIN) == {2: reason}
    assert inner.received == [1, 3]
    assert arrays is not None
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], np.full((2, 3), 1.5))


@pytest.mark.parametrize(("bad", "reason"), INCONSISTENT_EVALUATE)
@pytest.mark.usefixtures("task_identity")
def test_an_evaluate_reply_that_makes_flower_raise_is_rejected(
    bad: RecordDict, reason: str
) -> None:
    replies = [
        reply(1, evaluate_reply(loss=0.2), EVALUATE),
        reply(2, bad, EVALUATE),
        reply(3, evaluate_reply(loss=0.8, **{"num-examples": 15}), EVALUATE),
    ]
    with pytest.raises(InconsistentMessageReplies):  # Flower's own check, unwrapped
        Recorder().aggregate_evaluate(1, replies)
    inner = Recorder()
    strategy = wrapped(inner)

    metrics = strategy.aggregate_evaluate(1, replies)

    assert strategy.rejected(1, EVALUATE) == {2: reason}
    assert inner.received == [1, 3]
    assert metrics is not None
    assert metrics["loss"] == pytest.approx((5 * 0.2 + 15 * 0.8) / 20)


@pytest.mark.usefixtures("task_identity")
def test_wrapper_drops_invalid_updates_before_aggregation() -> None:
    inner = Recorder()
    strategy = wrapped(inner, max_update_norm=10.0, minimum=2)
    replies = [
        reply(1, train_reply(shifted(1.0))),
        reply(2, train_reply(with_nan())),
        reply(3, None),
        reply(4, train_reply(shifted(3.0))),
        reply(5, train_reply(shifted(5.0))),  # norm 15 > 10
    ]

    arrays, _ = strategy.aggregate_train(1, replies)

    assert inner.received == [1, 3, 4]  # errors pass through: FedAvg logs and skips them
    assert strategy.rejected(1, TRAIN) == {
        2: "array `1` contains NaN or Inf",
        5: "update norm 15 exceeds `max-update-norm` 10",
    }
    assert strategy.rejected(1, EVALUATE) == {}
    assert arrays is not None
    for got, expected in zip(arrays.to_numpy_ndarrays(), shifted(2.0), strict=True):
        np.testing.assert_allclose(got, expected)


@pytest.mark.usefixtures("task_identity")
def test_wrapper_does_not_aggregate_below_the_minimum() -> None:
    inner = Recorder()
    strategy = wrapped(inner, minimum=2)

    result = strategy.aggregate_train(3, [reply(1, train_reply(shifted(1.0))), reply(2, None)])

    assert result == (None, None)
    assert inner.received == []


@pytest.mark.usefixtures("task_identity")
def test_evaluate_with_every_reply_rejected_aggregates_nothing() -> None:
    inner = Recorder()
    strategy = wrapped(inner)

    metrics = strategy.aggregate_evaluate(2, [reply(7, evaluate_reply(f1=0.1), EVALUATE)])

    assert metrics is None
    assert strategy.rejected(2, EVALUATE) == {7: "record `metrics` keys: unexpected `f1`"}


@pytest.mark.usefixtures("task_identity")
def test_aggregate_keeps_the_global_models_dtypes_under_fedadam() -> None:
    """FedAdam's float64 step would otherwise turn the float32 model into float64."""
    strategy = ValidatingStrategy(FedAdam(), max_update_norm=0.0, min_valid_replies=1)
    start = ArrayRecord(model_arrays())
    strategy.current_arrays = start
    strategy.strategy.current_arrays = {k: a.numpy() for k, a in start.items()}  # type: ignore[attr-defined]

    arrays, _ = strategy.aggregate_train(1, [reply(1, train_reply(shifted(1.0)))])

    assert arrays is not None
    assert [a.dtype for a in arrays.to_numpy_ndarrays()] == [np.float32, np.float32]
    assert list(arrays.keys()) == list(start.keys())

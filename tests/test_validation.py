"""Update validation: pure checks and the strategy wrapper around Flower's FedAvg."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg

from server.validation import ValidatingStrategy, array_problem, reply_problem, update_norm


def model_arrays() -> list[np.ndarray]:
    return [np.ones((2, 3), dtype=np.float32), np.zeros((3,), dtype=np.float32)]


def shifted(by: float) -> list[np.ndarray]:
    return [a + np.float32(by) for a in model_arrays()]


def content(arrays: list[np.ndarray], examples: object = 10) -> RecordDict:
    metrics = MetricRecord({"num-examples": examples, "loss": 0.5})  # type: ignore[dict-item]
    return RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics})


def test_update_norm_matches_flattened_norm() -> None:
    rng = np.random.default_rng(0)
    reference = [rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=7)]
    update = [a + rng.normal(size=a.shape) for a in reference]

    flat = np.concatenate([(u - r).ravel() for u, r in zip(update, reference, strict=True)])

    assert update_norm(update, reference) == pytest.approx(float(np.linalg.norm(flat)))


def with_nan() -> list[np.ndarray]:
    arrays = model_arrays()
    arrays[1][0] = np.nan
    return arrays


def with_inf() -> list[np.ndarray]:
    arrays = model_arrays()
    arrays[0][1, 2] = -np.inf
    return arrays


@pytest.mark.parametrize(
    ("update", "max_norm", "expected"),
    [
        (model_arrays(), 0.0, None),
        (shifted(100.0), 0.0, None),  # 0 = no norm limit
        (shifted(1.0), 3.0, None),  # norm sqrt(9) = 3: at the limit is allowed
        (shifted(1.0), 2.5, "update norm 3 exceeds `max-update-norm` 2.5"),
        (model_arrays()[:1], 0.0, "1 arrays instead of the model's 2"),
        ([np.ones((3, 2), np.float32), np.zeros(3, np.float32)], 0.0,
         "array 0 is float32[3, 2], the model's is float32[2, 3]"),
        ([np.ones((2, 3), np.float64), np.zeros(3, np.float32)], 0.0,
         "array 0 is float64[2, 3], the model's is float32[2, 3]"),
        (with_nan(), 0.0, "array 1 contains NaN or Inf"),
        (with_inf(), 1e9, "array 0 contains NaN or Inf"),
    ],
)  # fmt: skip
def test_array_problem(update: list[np.ndarray], max_norm: float, expected: str | None) -> None:
    assert array_problem(update, model_arrays(), max_norm) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (content(model_arrays()), None),
        (RecordDict({"metrics": MetricRecord({"num-examples": 3})}), "0 array records instead of one"),
        (RecordDict({"a": ArrayRecord(model_arrays()), "b": ArrayRecord(model_arrays()),
                     "metrics": MetricRecord({"num-examples": 3})}), "2 array records instead of one"),
        (RecordDict({"arrays": ArrayRecord({"w": Array(model_arrays()[0])}),
                     "metrics": MetricRecord({"num-examples": 3})}), "array names differ from the model's"),
        (RecordDict({"arrays": ArrayRecord(model_arrays())}), "0 metric records instead of one"),
        (content(model_arrays(), examples=0), "metric `num-examples` is not a positive number"),
        (content(model_arrays(), examples=math.nan), "metric `num-examples` is not a positive number"),
        (content(with_nan()), "array 1 contains NaN or Inf"),
    ],
)  # fmt: skip
def test_reply_problem(reply: RecordDict, expected: str | None) -> None:
    reference = ArrayRecord(model_arrays())

    assert reply_problem(reply, reference, 0.0, "num-examples") == expected


class Recorder(FedAvg):
    """Flower's FedAvg that remembers which replies reached its aggregation."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[int] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.received = [r.metadata.src_node_id for r in replies]
        return super().aggregate_train(server_round, replies)


def reply(node: int, payload: RecordDict | None) -> Message:
    request = Message(content=RecordDict(), dst_node_id=node, message_type="train")
    if payload is None:
        return Message(Error(0, "crashed"), reply_to=request)
    return Message(content=payload, reply_to=request)


@pytest.mark.usefixtures("task_identity")
def test_wrapper_drops_invalid_updates_before_aggregation() -> None:
    inner = Recorder()
    strategy = ValidatingStrategy(inner, max_update_norm=10.0, min_valid_replies=2)
    strategy.current_arrays = ArrayRecord(model_arrays())
    replies = [
        reply(1, content(shifted(1.0))),
        reply(2, content(with_nan())),
        reply(3, None),
        reply(4, content(shifted(3.0))),
        reply(5, content(shifted(5.0))),  # norm 15 > 10
    ]

    arrays, _ = strategy.aggregate_train(1, replies)

    assert inner.received == [1, 3, 4]  # errors pass through: FedAvg logs and skips them
    assert [(r.node_id, r.reason) for r in strategy.rejections[1]] == [
        (2, "array 1 contains NaN or Inf"),
        (5, "update norm 15 exceeds `max-update-norm` 10"),
    ]
    assert arrays is not None
    for got, expected in zip(arrays.to_numpy_ndarrays(), shifted(2.0), strict=True):
        np.testing.assert_allclose(got, expected)


@pytest.mark.usefixtures("task_identity")
def test_wrapper_does_not_aggregate_below_the_minimum() -> None:
    inner = Recorder()
    strategy = ValidatingStrategy(inner, max_update_norm=0.0, min_valid_replies=2)
    strategy.current_arrays = ArrayRecord(model_arrays())

    result = strategy.aggregate_train(3, [reply(1, content(shifted(1.0))), reply(2, None)])

    assert result == (None, None)
    assert inner.received == []


@pytest.mark.usefixtures("task_identity")
def test_aggregate_keeps_the_global_models_dtypes_under_fedadam() -> None:
    """FedAdam's float64 step would otherwise turn the float32 model into float64."""
    strategy = ValidatingStrategy(FedAdam(), max_update_norm=0.0, min_valid_replies=1)
    start = ArrayRecord(model_arrays())
    strategy.current_arrays = start
    strategy.strategy.current_arrays = {k: a.numpy() for k, a in start.items()}  # type: ignore[attr-defined]

    arrays, _ = strategy.aggregate_train(1, [reply(1, content(shifted(1.0)))])

    assert arrays is not None
    assert [a.dtype for a in arrays.to_numpy_ndarrays()] == [np.float32, np.float32]
    assert list(arrays.keys()) == list(start.keys())

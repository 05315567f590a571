"""Centered clipping: the numpy aggregator against a plain-Python transcription of the
paper's update, its edge cases, and the Flower strategy on hand-made replies."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.exception import AggregationError

from server.aggregation import weighted_mean_ignoring_nan
from server.centered_clip import CenteredClipping, centered_clip
from tests.fake_grid import FakeGrid, answers

pytestmark = pytest.mark.usefixtures("task_identity")  # the strategy tests build Messages

SHAPES = [(3, 2), (4,), (1, 1, 2)]
KEYS = ["dense/kernel", "conv/bias", "a/last"]  # not sorted: the order must be kept


def flat(arrays: Sequence[np.ndarray]) -> list[float]:
    return [float(x) for layer in arrays for x in np.asarray(layer).ravel()]


def oracle(
    updates: Sequence[Sequence[np.ndarray]],
    center: Sequence[np.ndarray],
    radius: float,
    iterations: int,
) -> list[float]:
    """v <- v + (1/n) sum_i clip_tau(x_i - v), clip_tau(z) = z min(1, tau/||z||), on one
    flattened vector per hospital, element by element."""
    points = [flat(update) for update in updates]
    v = flat(center)
    for _ in range(iterations):
        total = [0.0] * len(v)
        for x in points:
            z = [x[j] - v[j] for j in range(len(v))]
            norm = math.sqrt(sum(zj * zj for zj in z))
            scale = min(1.0, radius / norm) if norm > 0.0 else 1.0
            for j in range(len(v)):
                total[j] += scale * z[j]
        v = [v[j] + total[j] / len(points) for j in range(len(v))]
    return v


def unflat(values: Sequence[float]) -> list[np.ndarray]:
    sizes = np.cumsum([0] + [math.prod(shape) for shape in SHAPES])
    return [
        np.reshape(values[start:stop], shape)
        for start, stop, shape in zip(sizes[:-1], sizes[1:], SHAPES, strict=True)
    ]


def layers(rng: np.random.Generator, scale: float = 1.0) -> list[np.ndarray]:
    return [(scale * rng.standard_normal(shape)).astype(np.float32) for shape in SHAPES]


def zeros() -> list[np.ndarray]:
    return [np.zeros(shape, np.float32) for shape in SHAPES]


@pytest.mark.parametrize(
    ("hospitals", "radius", "iterations", "centered", "seed"),
    [
        (1, 0.5, 1, False, 0),
        (3, 0.5, 1, False, 1),
        (3, 0.5, 3, True, 2),
        (5, 2.0, 1, True, 3),
        (5, 2.0, 5, False, 4),
        (7, 0.05, 2, True, 5),
        (4, 100.0, 2, True, 6),
    ],
)
def test_matches_the_papers_update(
    hospitals: int, radius: float, iterations: int, centered: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    updates = [layers(rng, scale=float(i + 1)) for i in range(hospitals)]
    center = layers(rng, scale=0.3) if centered else zeros()

    result = centered_clip(updates, center, radius, iterations)

    assert [a.shape for a in result] == SHAPES
    expected = oracle(updates, center, radius, iterations)
    np.testing.assert_allclose(flat(result), expected, rtol=1e-12, atol=1e-12)


def test_an_update_equal_to_the_center_divides_by_nothing() -> None:
    center = [np.array([1.0, 1.0]), np.array([0.0])]
    updates = [[a.copy() for a in center], [np.array([4.0, 5.0]), np.array([0.0])]]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 would warn
        result = centered_clip(updates, center, radius=1.0, iterations=1)

    # (4, 5, 0) - (1, 1, 0) = (3, 4, 0), norm 5, clipped to (0.6, 0.8, 0); the other adds 0.
    np.testing.assert_allclose(flat(result), [1.3, 1.4, 0.0], rtol=0, atol=1e-15)


def test_every_update_at_the_center_leaves_the_center() -> None:
    center = [np.array([2.0, -1.0]), np.array([[0.5]])]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = centered_clip([center, center, center], center, radius=1.0, iterations=3)

    assert flat(result) == flat(center)


@pytest.mark.parametrize("iterations", [1, 4])
@pytest.mark.parametrize("centered", [False, True])
def test_a_radius_beyond_every_distance_is_the_plain_mean(iterations: int, centered: bool) -> None:
    rng = np.random.default_rng(7)
    updates = [layers(rng, scale=float(i + 1)) for i in range(4)]
    center = layers(rng) if centered else zeros()
    mean = np.mean([flat(u) for u in updates], axis=0)

    result = centered_clip(updates, center, radius=1e6, iterations=iterations)

    # One step from any v with no clipping: v + mean(x_i - v) = mean(x_i); the mean is a
    # fixed point, since sum(x_i - mean) = 0.
    np.testing.assert_allclose(flat(result), mean, rtol=1e-12, atol=1e-12)


def test_a_distance_exactly_the_radius_is_not_clipped() -> None:
    center = [np.zeros(2)]
    updates = [[np.array([3.0, 4.0])], [np.array([-3.0, -4.0])], [np.array([3.0, 4.0])]]

    result = centered_clip(updates, center, radius=5.0, iterations=1)

    np.testing.assert_allclose(flat(result), [1.0, 4.0 / 3.0], rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("hospitals", "radius", "iterations"),
    [(2, 1.0, 1), (5, 0.5, 1), (5, 0.5, 3), (10, 2.0, 6)],
)
def test_one_far_outlier_moves_the_result_at_most_radius_over_n_per_iteration(
    hospitals: int, radius: float, iterations: int
) -> None:
    center = [np.array([1.0, -2.0, 0.5]), np.array([3.0])]
    outlier = [np.array([1e6, -1e6, 1e6]), np.array([-1e6])]
    updates = [center] * (hospitals - 1) + [outlier]

    result = centered_clip(updates, center, radius, iterations)

    moved = np.array(flat(result)) - np.array(flat(center))
    # The honest ones sit at the center; with v = c + s u (u towards the outlier) each
    # iteration gives s <- s/n + radius/n, so s_L = radius * (1/n + ... + 1/n^L).
    expected = radius * sum(hospitals**-k for k in range(1, iterations + 1))
    assert np.linalg.norm(moved) == pytest.approx(expected, rel=1e-12)
    assert np.linalg.norm(moved) <= iterations * radius / hospitals * (1 + 1e-12)
    direction = np.array(flat(outlier)) - np.array(flat(center))
    np.testing.assert_allclose(moved / np.linalg.norm(moved), direction / np.linalg.norm(direction))


RADIUS = "Invalid value for `clip-radius`. Expected a number > 0. Received: "
ITERATIONS = "Invalid value for `clip-iterations`. Expected an integer ≥ 1. Received: "
UPDATES = "Invalid value for `updates`. Expected "
SHAPES_OF = UPDATES + "layers of shapes "


@pytest.mark.parametrize(
    ("radius", "iterations", "updates", "message"),
    [
        (0.0, 1, [zeros()], RADIUS + "0.0"),
        (-1.0, 1, [zeros()], RADIUS + "-1.0"),
        (1.0, 0, [zeros()], ITERATIONS + "0"),
        (1.0, True, [zeros()], ITERATIONS + "True"),
        (1.0, 1, [], UPDATES + "at least one update. Received: []"),
        (1.0, 1, [[np.zeros(2)]], SHAPES_OF + "[(3, 2), (4,), (1, 1, 2)]. Received: [(2,)]"),
    ],
)  # fmt: skip
def test_refuses_bad_arguments(
    radius: float, iterations: int, updates: list[list[np.ndarray]], message: str
) -> None:
    with pytest.raises(ValueError, match="Invalid value") as caught:
        centered_clip(updates, zeros(), radius, iterations)

    assert str(caught.value) == message


# -- the strategy ---------------------------------------------------------------------
def record(arrays: Sequence[np.ndarray]) -> ArrayRecord:
    return ArrayRecord({key: Array(np.asarray(a)) for key, a in zip(KEYS, arrays, strict=True)})


def reply(
    node: int, arrays: Sequence[np.ndarray] | None, examples: int = 10, loss: float = 0.5
) -> Message:
    request = Message(content=RecordDict(), dst_node_id=node, message_type="train")
    if arrays is None:
        return Message(Error(0, "crashed"), reply_to=request)
    metrics = MetricRecord({"num-examples": examples, "loss": loss, "accuracy": 0.75})
    return Message(RecordDict({"arrays": record(arrays), "metrics": metrics}), reply_to=request)


def strategy(radius: float, iterations: int = 1) -> CenteredClipping:
    return CenteredClipping(
        radius=radius,
        iterations=iterations,
        train_metrics_aggr_fn=weighted_mean_ignoring_nan,
        evaluate_metrics_aggr_fn=weighted_mean_ignoring_nan,
    )


def minus(returned: Sequence[np.ndarray], sent: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A hospital's update, exact: float32 weights subtracted in float64."""
    pairs = zip(returned, sent, strict=True)
    return [r.astype(np.float64) - b.astype(np.float64) for r, b in pairs]


def start_round(clipping: CenteredClipping, arrays: Sequence[np.ndarray]) -> None:
    grid = FakeGrid({1: answers(0.0), 2: answers(0.0), 3: answers(0.0)})
    list(clipping.configure_train(1, record(arrays), ConfigRecord(), grid))


def test_configure_train_remembers_the_arrays_it_sends() -> None:
    clipping, current = strategy(1.0), layers(np.random.default_rng(0))

    start_round(clipping, current)

    assert clipping.current_arrays is not None
    assert flat(clipping.current_arrays.to_numpy_ndarrays()) == flat(current)


@pytest.mark.parametrize(("radius", "iterations"), [(0.5, 1), (2.0, 3)])
def test_two_rounds_clip_updates_around_the_last_aggregate(radius: float, iterations: int) -> None:
    rng = np.random.default_rng(11)
    clipping = strategy(radius, iterations)
    first, second = layers(rng), layers(rng)
    returned = [[layers(rng, scale=float(i + 1)) for i in range(3)] for _ in range(2)]

    start_round(clipping, first)
    arrays1, _ = clipping.aggregate_train(1, [reply(n, a) for n, a in enumerate(returned[0])])
    start_round(clipping, second)  # e.g. a resumed or externally changed model
    arrays2, _ = clipping.aggregate_train(2, [reply(n, a) for n, a in enumerate(returned[1])])

    step1 = oracle([minus(a, first) for a in returned[0]], zeros(), radius, iterations)
    center1 = unflat(step1)
    step2 = oracle([minus(a, second) for a in returned[1]], center1, radius, iterations)
    for got, base, step in ((arrays1, first, step1), (arrays2, second, step2)):
        assert got is not None
        assert list(got.keys()) == KEYS
        assert [a.dtype for a in got.to_numpy_ndarrays()] == [np.float32] * 3
        expected = np.add(flat(base), step)
        np.testing.assert_allclose(flat(got.to_numpy_ndarrays()), expected, rtol=1e-6, atol=1e-6)
    assert clipping.center is not None
    np.testing.assert_allclose(flat(clipping.center), step2, rtol=1e-12, atol=1e-12)


def test_every_reply_counts_once_and_metrics_are_weighted_like_fedavg() -> None:
    clipping, current = strategy(radius=1e6), zeros()
    small = [np.full(shape, 1.0, np.float32) for shape in SHAPES]
    large = [np.full(shape, 3.0, np.float32) for shape in SHAPES]
    start_round(clipping, current)

    arrays, metrics = clipping.aggregate_train(
        1, [reply(1, small, examples=1, loss=1.0), reply(2, large, examples=99, loss=2.0)]
    )

    assert arrays is not None
    assert metrics is not None
    assert flat(arrays.to_numpy_ndarrays()) == [2.0] * 12  # (1 + 3) / 2, not by examples
    assert metrics["loss"] == pytest.approx((1 * 1.0 + 99 * 2.0) / 100)


def test_failed_replies_are_left_out_and_no_reply_changes_nothing() -> None:
    clipping, current = strategy(radius=1e6), zeros()
    ones = [np.ones(shape, np.float32) for shape in SHAPES]
    start_round(clipping, current)

    nothing = clipping.aggregate_train(1, [reply(1, None)])
    arrays, _ = clipping.aggregate_train(1, [reply(1, None), reply(2, ones)])

    assert nothing == (None, None)
    assert arrays is not None
    assert flat(arrays.to_numpy_ndarrays()) == [1.0] * 12


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        ("no-round", "No global arrays set for CenteredClipping. Ensure that "
                     "`configure_train` has been called before aggregation."),
        ("other-names", "CenteredClipping needs the global model's array names in every reply."),
    ],
)  # fmt: skip
def test_aggregation_refuses_what_it_cannot_measure(prepare: str, message: str) -> None:
    clipping = strategy(1.0)
    if prepare == "other-names":
        clipping.current_arrays = ArrayRecord({"other": Array(np.zeros(1, np.float32))})

    with pytest.raises(AggregationError) as caught:
        clipping.aggregate_train(1, [reply(1, zeros())])

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("radius", "iterations", "message"),
    [
        (0.0, 1, "Invalid value for `clip-radius`. Expected a number > 0. Received: 0.0"),
        (1.0, 0, "Invalid value for `clip-iterations`. Expected an integer ≥ 1. Received: 0"),
    ],
)
def test_the_strategy_refuses_bad_settings(radius: float, iterations: int, message: str) -> None:
    with pytest.raises(ValueError, match="Invalid value") as caught:
        CenteredClipping(radius=radius, iterations=iterations)

    assert str(caught.value) == message

"""The one cross-entropy of predicted probabilities (common/metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.metrics import PROBABILITY_FLOOR, cross_entropy


@pytest.mark.parametrize(
    ("labels", "probabilities"),
    [
        ([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]),
        ([2, 0, 1, 2], [[0.1, 0.2, 0.7], [0.5, 0.25, 0.25], [0.3, 0.3, 0.4], [0.0, 0.5, 0.5]]),
        ([1], [[1.0, 0.0]]),  # a certain mistake costs -log(floor), not infinity
        ([0, 0], [[1.0, 0.0], [1.0, 0.0]]),  # certain and right: zero
    ],
    ids=["binary", "three-classes", "certain-mistake", "certain-right"],
)
def test_matches_a_loop_over_examples(labels: list[int], probabilities: list[list[float]]) -> None:
    expected = sum(
        -math.log(max(row[label], PROBABILITY_FLOOR))
        for label, row in zip(labels, probabilities, strict=True)
    ) / len(labels)

    loss = cross_entropy(np.array(labels), np.array(probabilities, dtype=np.float32))

    assert loss == pytest.approx(expected, rel=1e-6)


def test_a_confident_mistake_costs_the_floor() -> None:
    assert cross_entropy(np.array([1]), np.array([[1.0, 0.0]])) == pytest.approx(-math.log(1e-7))


def test_no_examples_is_undefined() -> None:
    assert math.isnan(cross_entropy(np.zeros(0, np.int64), np.zeros((0, 2))))

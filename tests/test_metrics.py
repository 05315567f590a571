from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from common.metrics import binary_auc, classification_metrics, confusion_matrix


def pairwise_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Oracle: the probability a random positive outranks a random negative (ties half)."""
    pos, neg = scores[is_positive], scores[~is_positive]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (pos.size * neg.size)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_oracle_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60).astype(bool)
    scores = np.round(rng.random(60), 1)  # rounding forces ties

    assert binary_auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores))


def test_auc_undefined_with_one_class() -> None:
    assert math.isnan(binary_auc(np.ones(5, dtype=bool), np.linspace(0, 1, 5)))


def test_confusion_matrix_counts_pairs() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2])
    expected = np.zeros((3, 3), dtype=int)
    for t, p in zip(labels, predicted, strict=True):
        expected[t, p] += 1

    assert confusion_matrix(labels, predicted, 3).tolist() == expected.tolist()


def test_binary_metrics_against_hand_counts() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.8, 0.7])
    probabilities = np.stack([1 - p1, p1], axis=1)

    metrics = classification_metrics(labels, probabilities)

    # predicted: 0 1 0 1 0 1 1 -> TN=2 FP=1 FN=1 TP=3
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert metrics["sensitivity"] == pytest.approx(3 / 4)
    assert metrics["specificity"] == pytest.approx(2 / 3)
    assert metrics["auc"] == pytest.approx(pairwise_auc(labels == 1, p1))

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


# -- more than two classes: macro one-vs-rest AUC, macro sensitivity and specificity ----------
def multiclass_oracle(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Loop-by-loop: argmax (first of equal maxima), then per class one-vs-rest pairwise AUC,
    recall and specificity, averaged over the classes where each is defined."""
    rows = probabilities.tolist()
    truth = labels.tolist()
    classes = range(len(rows[0]))
    predicted = [next(k for k in classes if row[k] == max(row)) for row in rows]
    aucs, recalls, specificities = [], [], []
    for k in classes:
        positives = [i for i, t in enumerate(truth) if t == k]
        negatives = [i for i, t in enumerate(truth) if t != k]
        if positives and negatives:
            is_positive = np.array([t == k for t in truth])
            aucs.append(pairwise_auc(is_positive, probabilities[:, k]))
        if positives:
            recalls.append(sum(predicted[i] == k for i in positives) / len(positives))
        if negatives:
            specificities.append(sum(predicted[i] != k for i in negatives) / len(negatives))
    return {
        "accuracy": sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth),
        "auc": sum(aucs) / len(aucs),
        "sensitivity": sum(recalls) / len(recalls),
        "specificity": sum(specificities) / len(specificities),
    }


def test_three_class_metrics_against_hand_counts() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array(
        [
            [0.7, 0.2, 0.1],  # -> 0, right
            [0.3, 0.4, 0.3],  # -> 1, wrong
            [0.2, 0.6, 0.2],  # -> 1, right
            [0.1, 0.3, 0.6],  # -> 2, wrong
            [0.1, 0.1, 0.8],  # -> 2, right
            [0.5, 0.2, 0.3],  # -> 0, wrong
        ]
    )

    metrics = classification_metrics(labels, probabilities)

    # one right of two per class; each class is predicted once for one of its 4 negatives;
    # one-vs-rest AUCs 7/8, 7/8 and 6.5/8 (class 2: 0.3 ties the negative 0.3)
    assert metrics == pytest.approx(
        {"accuracy": 3 / 6, "sensitivity": 1 / 2, "specificity": 3 / 4, "auc": 20.5 / 24}
    )


@pytest.mark.parametrize(
    ("classes", "present", "seed"),
    [
        (3, 3, 0),
        (3, 3, 1),
        (4, 4, 2),
        (5, 5, 3),
        (4, 3, 4),  # class 3 never occurs: its AUC and recall are undefined and left out
    ],
)
def test_multiclass_metrics_match_the_loop_oracle(classes: int, present: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, present, 80)
    weights = rng.integers(1, 4, (80, classes)).astype(np.float64)  # few distinct rows:
    probabilities = weights / weights.sum(axis=1, keepdims=True)  # tied scores and maxima

    metrics = classification_metrics(labels, probabilities)

    assert set(metrics) == {"accuracy", "auc", "sensitivity", "specificity"}
    assert metrics == pytest.approx(multiclass_oracle(labels, probabilities))

"""Classification metrics as pure numpy functions of labels and predicted probabilities.

For two classes the positive class is index 1 ("pneumonia" in PneumoniaMNIST):
sensitivity is its recall, specificity the recall of class 0. For more classes AUC is
the macro one-vs-rest average and sensitivity / specificity are macro averages.
"""

from __future__ import annotations

import math

import numpy as np

PROBABILITY_FLOOR = 1e-7  # Keras's epsilon: a confident mistake costs -log(1e-7) ≈ 16.1


def cross_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-probability of the true class, probabilities clipped to
    [``PROBABILITY_FLOOR``, 1] as Keras does; NaN when there are no examples."""
    if labels.shape[0] == 0:
        return math.nan
    picked = probabilities[np.arange(labels.shape[0]), labels.astype(np.int64)]
    clipped = np.clip(picked.astype(np.float64), PROBABILITY_FLOOR, 1.0)
    return float(-np.mean(np.log(clipped)))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with true class on rows and predicted class on columns."""
    flat = labels.astype(np.int64) * num_classes + predicted.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) identity, ties averaged.

    NaN when only one class is present, since the AUC is undefined there.
    """
    positives = int(is_positive.sum())
    negatives = int(is_positive.size - positives)
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # average ranks over runs of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [scores.size]))
    averaged = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(averaged, ends - starts)
    rank_sum = float(ranks[is_positive.astype(bool)].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Binary AUC on class 1, or the macro one-vs-rest AUC over the classes present."""
    num_classes = probabilities.shape[1]
    if num_classes == 2:
        return binary_auc(labels == 1, probabilities[:, 1])
    per_class = [binary_auc(labels == k, probabilities[:, k]) for k in range(num_classes)]
    defined = [value for value in per_class if not math.isnan(value)]
    return float(np.mean(defined)) if defined else math.nan


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else math.nan


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, AUC, sensitivity and specificity of predicted class probabilities."""
    num_classes = probabilities.shape[1]
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), num_classes)
    true_pos = np.diag(matrix).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    total = float(matrix.sum())
    if num_classes == 2:
        sensitivity = _ratio(true_pos[1], actual[1])
        specificity = _ratio(true_pos[0], actual[0])
    else:
        recalls = [_ratio(true_pos[k], actual[k]) for k in range(num_classes)]
        negatives = total - actual
        true_neg = total - actual - (matrix.sum(axis=0) - true_pos)
        specs = [_ratio(true_neg[k], negatives[k]) for k in range(num_classes)]
        sensitivity = float(np.nanmean(recalls)) if total else math.nan
        specificity = float(np.nanmean(specs)) if total else math.nan
    return {
        "accuracy": _ratio(float(true_pos.sum()), total),
        "auc": float(auc(labels, probabilities)),
        "sensitivity": sensitivity,
        "specificity": specificity,
    }

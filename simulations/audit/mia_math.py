"""The numbers of a membership-inference audit, in plain numpy: per-example scores, ROC, AUC,
TPR at a low FPR with stratified bootstrap intervals, offline LiRA and the DP bound.

Convention everywhere: a higher score means "more likely a member". ROC points sit at the
distinct scores (predict "member" when score ≥ threshold), so tied scores move together and the
area under the curve is the Mann-Whitney statistic with ties counted ½.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.errors import FedclinicError, invalid_value

FPR_POINTS: tuple[float, ...] = (0.001, 0.01)  # the reported FPRs (0.1 %, 1 %)
# probabilities are clipped here so a loss or φ is always finite (|φ| ≤ 103.6); 1e-45 is about
# the smallest positive float32 (as in Carlini et al.'s code): no float32 softmax output is cut
PROBABILITY_FLOOR = 1e-45
_FPR_SLACK = 1e-9  # false positives allowed at FPR f among n non-members: ⌊f·n + slack⌋
_BOOTSTRAP_CHUNK = 128  # resamples evaluated together (bounds memory to chunk × examples)


class AuditError(FedclinicError, ValueError):
    """An audit input is invalid (one line, Keras style)."""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class AttackFigures:
    auc: float
    auc_ci: Interval
    tpr: dict[float, float]  # keys: FPR_POINTS
    tpr_ci: dict[float, Interval]
    members: int
    non_members: int
    level: float = 0.95  # confidence level of the intervals


def _true_class(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p_y, Σ_{j≠y} p_j) per example, in float64."""
    probs = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise AuditError(invalid_value("probabilities", "an array (N, C) with C ≥ 2", probs.shape))
    if labels.shape != (probs.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        expected = f"integer labels of shape ({probs.shape[0]},)"
        raise AuditError(invalid_value("labels", expected, f"{labels.dtype} {labels.shape}"))
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        expected = f"labels in [0, {probs.shape[1] - 1}]"
        raise AuditError(invalid_value("labels", expected, sorted(set(labels.tolist()))))
    chosen = np.arange(probs.shape[1])[None, :] == labels[:, None]
    p_true = probs[chosen]
    others = np.where(chosen, 0.0, probs).sum(axis=1)  # not 1 − p_y: exact when p_y ≈ 1
    return p_true, others


def example_loss(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy −log p_y of each example, p_y clipped at ``PROBABILITY_FLOOR``.

    The loss attack scores with −loss (higher = member).
    """
    p_true, _ = _true_class(probabilities, labels)
    return 0.0 - np.log(np.maximum(p_true, PROBABILITY_FLOOR))  # 0.0 −: no −0.0 at p_y = 1


def logit_confidence(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """φ = log p_y − log(1 − p_y), LiRA's approximately normal statistic.

    1 − p_y is computed as the sum of the other classes' probabilities, which keeps its
    precision when p_y rounds to 1; both terms are clipped at ``PROBABILITY_FLOOR``.
    """
    p_true, others = _true_class(probabilities, labels)
    return np.log(np.maximum(p_true, PROBABILITY_FLOOR)) - np.log(
        np.maximum(others, PROBABILITY_FLOOR)
    )


def _checked(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    members = np.asarray(is_member)
    if scores.ndim != 1 or members.shape != scores.shape:
        shapes = f"scores {scores.shape}, is_member {members.shape}"
        raise AuditError(
            invalid_value("is_member", "one flag per score (equal 1-D shapes)", shapes)
        )
    if members.dtype != np.bool_:
        raise AuditError(invalid_value("is_member", "a boolean array", str(members.dtype)))
    if not np.all(np.isfinite(scores)):
        raise AuditError(invalid_value("scores", "finite numbers", "NaN or infinity"))
    count = int(members.sum())
    if count == 0 or count == members.size:
        expected = "at least one member and one non-member"
        received = f"{count} members, {members.size - count} non-members"
        raise AuditError(invalid_value("is_member", expected, received))
    return scores, members


def _ranked(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, group ends): indices by descending score, and where each run of equal scores ends."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    ends = np.append(np.flatnonzero(np.diff(ranked)) + 1, ranked.size)
    return order, ends


def _counts(
    weights_in: np.ndarray, weights_out: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (TP, FP) counts at each threshold, (B, groups + 1), starting at 0.

    ``weights_*`` (B, N) are how often each ranked example is drawn as a member / non-member.
    """
    zero = np.zeros((weights_in.shape[0], 1))
    tp = np.hstack([zero, np.cumsum(weights_in, axis=1)[:, ends - 1]])
    fp = np.hstack([zero, np.cumsum(weights_out, axis=1)[:, ends - 1]])
    return tp, fp


def _auc_and_tpr(tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC (B,) by the trapezoid rule (= Mann-Whitney, ties ½) and TPR at each FPR_POINTS (B, F)."""
    positives, negatives = tp[:, -1], fp[:, -1]
    area = np.sum(np.diff(fp, axis=1) * (tp[:, 1:] + tp[:, :-1]) / 2.0, axis=1)
    auc = area / (positives * negatives)
    tprs = np.empty((tp.shape[0], len(FPR_POINTS)))
    for column, fpr in enumerate(FPR_POINTS):
        # fp rises along a row, so the allowed thresholds are a prefix; the last has the best TPR
        last = np.sum(fp <= np.floor(fpr * negatives + _FPR_SLACK)[:, None], axis=1) - 1
        tprs[:, column] = tp[np.arange(tp.shape[0]), last] / positives
    return auc, tprs


def _point_counts(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (TP, FP) counts at every distinct score, from (0, 0) to (members, others)."""
    scores, members = _checked(scores, is_member)
    order, ends = _ranked(scores)
    flags = members[order][None, :].astype(np.float64)
    tp, fp = _counts(flags, 1.0 - flags, ends)
    return tp[0], fp[0]


def roc_curve(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct score, from (0, 0) to (1, 1)."""
    tp, fp = _point_counts(scores, is_member)
    return fp / fp[-1], tp / tp[-1]


def roc_auc(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Probability that a random member outscores a random non-member, ties counting ½."""
    fpr, tpr = roc_curve(scores, is_member)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def tpr_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr: float) -> float:
    """The best TPR of any threshold whose FPR is at most ``fpr``.

    Below 1/non-members this is the TPR at FPR 0: members scored above every non-member.
    """
    if not 0.0 <= fpr <= 1.0:
        raise AuditError(invalid_value("fpr", "a number in [0, 1]", fpr))
    tp, fp = _point_counts(scores, is_member)
    allowed = fp <= math.floor(fpr * fp[-1] + _FPR_SLACK)
    return float(tp[allowed].max() / tp[-1])


def shadow_assignment(num_candidates: int, num_shadows: int, seed: int) -> np.ndarray:
    """(K, N) bool: shadow k trains on candidate n. Every candidate is IN exactly K/2 shadows
    (a random half, drawn per candidate), so each shadow holds about N/2 candidates."""
    if isinstance(num_shadows, bool) or not isinstance(num_shadows, int | np.integer):
        raise AuditError(invalid_value("num_shadows", "an even integer ≥ 2", num_shadows))
    if num_shadows < 2 or num_shadows % 2:
        raise AuditError(invalid_value("num_shadows", "an even integer ≥ 2", num_shadows))
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int | np.integer):
        raise AuditError(invalid_value("num_candidates", "an integer ≥ 1", num_candidates))
    if num_candidates < 1:
        raise AuditError(invalid_value("num_candidates", "an integer ≥ 1", num_candidates))
    rng = np.random.default_rng(seed)
    ranks = np.argsort(rng.random((num_shadows, num_candidates)), axis=0).argsort(axis=0)
    return np.asarray(ranks < num_shadows // 2)


def lira_offline_scores(
    target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_in: np.ndarray
) -> np.ndarray:
    """Offline LiRA (Carlini et al. 2022) with a fixed global variance.

    μ_n: the mean φ of candidate n over the shadows where it was OUT; σ: one population standard
    deviation of (φ_out − μ_n) pooled over every OUT entry; score = (target φ − μ_n) / σ. σ is a
    single constant, so it does not change the ROC; it only puts scores on a readable scale.
    """
    target = np.asarray(target_phi, dtype=np.float64)
    phi = np.asarray(shadow_phi, dtype=np.float64)
    inside = np.asarray(shadow_in)
    if target.ndim != 1 or phi.ndim != 2 or phi.shape[1] != target.size:
        shapes = f"target_phi {target.shape}, shadow_phi {phi.shape}"
        raise AuditError(invalid_value("shadow_phi", "an array (K, N) for N targets", shapes))
    if inside.shape != phi.shape or inside.dtype != np.bool_:
        received = f"{inside.dtype} {inside.shape}"
        raise AuditError(invalid_value("shadow_in", f"a bool array {phi.shape}", received))
    out = ~inside
    out_counts = out.sum(axis=0)
    if np.any(out_counts == 0):
        lonely = int(np.flatnonzero(out_counts == 0)[0])
        received = f"candidate {lonely} IN all {phi.shape[0]} shadows"
        raise AuditError(invalid_value("shadow_in", "every candidate OUT of some shadow", received))
    mean_out = np.where(out, phi, 0.0).sum(axis=0) / out_counts
    sigma = float(np.sqrt(np.mean((phi - mean_out)[out] ** 2)))
    if not sigma > 0.0:
        raise AuditError(invalid_value("shadow_phi", "OUT values that vary", sigma))
    return np.asarray((target - mean_out) / sigma)


def class_calibrated(scores: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each score's quantile among the ``reference`` scores (the non-members) of its own
    class, ``(#below + #below-or-equal) / (2 · n_class)``: a label-aware attacker's score.

    Without it a threshold attack compares classes as much as membership: a hospital whose
    images are all "normal", scored against non-members that are 74 % pneumonia, looks
    exposed to any score whose distribution differs between classes, in its mean or only in
    its tail. Within each class the reference quantiles are uniform, so the non-members'
    scores no longer depend on the class at all. A class with fewer than two reference scores
    is placed among all reference scores.
    """
    values = np.asarray(scores, dtype=np.float64)
    classes = np.asarray(labels)
    ref = np.asarray(reference, dtype=bool)
    if not values.shape == classes.shape == ref.shape or values.ndim != 1:
        shapes = f"scores {values.shape}, labels {classes.shape}, reference {ref.shape}"
        raise AuditError(invalid_value("labels", "arrays of one shape (N,)", shapes))
    if ref.sum() < 2:
        raise AuditError(invalid_value("reference", "at least 2 reference scores", int(ref.sum())))
    pooled = np.sort(values[ref])
    calibrated = np.empty_like(values)
    for label in np.unique(classes):
        in_class = classes == label
        own = np.sort(values[in_class & ref])
        own = own if own.size >= 2 else pooled
        below = np.searchsorted(own, values[in_class], side="left")
        upto = np.searchsorted(own, values[in_class], side="right")
        calibrated[in_class] = (below + upto) / (2.0 * own.size)
    return calibrated


def _interval(values: np.ndarray, level: float) -> Interval:
    low, high = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(float(low), float(high))


def _draw_counts(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """(size, count): how often each item is drawn in each of ``size`` resamples of ``count``."""
    rows = np.arange(size)[:, None] * count
    draws = rng.integers(0, count, (size, count)) + rows
    return np.bincount(draws.ravel(), minlength=size * count).reshape(size, count)


def attack_figures(
    scores: np.ndarray,
    is_member: np.ndarray,
    *,
    bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> AttackFigures:
    """AUC and TPR at FPR_POINTS with percentile bootstrap intervals.

    Each resample draws the members and the non-members separately, with replacement, keeping
    their counts (stratified), so every resample has both classes.
    """
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
        raise AuditError(invalid_value("bootstrap", "an integer ≥ 1", bootstrap))
    if not 0.0 < level < 1.0:
        raise AuditError(invalid_value("level", "a number in (0, 1)", level))
    scores, members = _checked(scores, is_member)
    order, ends = _ranked(scores)
    ranked_in = members[order]
    n_in, n_out = int(ranked_in.sum()), int((~ranked_in).sum())
    flags = ranked_in[None, :].astype(np.float64)
    auc, tprs = _auc_and_tpr(*_counts(flags, 1.0 - flags, ends))
    rng = np.random.default_rng(seed)
    aucs, tpr_draws = [], []
    for start in range(0, bootstrap, _BOOTSTRAP_CHUNK):
        size = min(_BOOTSTRAP_CHUNK, bootstrap - start)
        weights_in = np.zeros((size, ranked_in.size))
        weights_out = np.zeros((size, ranked_in.size))
        weights_in[:, ranked_in] = _draw_counts(rng, n_in, size)
        weights_out[:, ~ranked_in] = _draw_counts(rng, n_out, size)
        chunk_auc, chunk_tpr = _auc_and_tpr(*_counts(weights_in, weights_out, ends))
        aucs.append(chunk_auc)
        tpr_draws.append(chunk_tpr)
    auc_draws, tpr_all = np.concatenate(aucs), np.concatenate(tpr_draws)
    return AttackFigures(
        auc=float(auc[0]),
        auc_ci=_interval(auc_draws, level),
        tpr={fpr: float(tprs[0, i]) for i, fpr in enumerate(FPR_POINTS)},
        tpr_ci={fpr: _interval(tpr_all[:, i], level) for i, fpr in enumerate(FPR_POINTS)},
        members=n_in,
        non_members=n_out,
        level=level,
    )


def dp_bound(fpr: np.ndarray | float, epsilon: float, delta: float) -> np.ndarray | float:
    """The highest TPR any attack can reach at ``fpr`` against an (ε, δ)-DP model:
    min(1, e^ε·FPR + δ)."""
    if not (math.isfinite(epsilon) and epsilon >= 0.0):
        raise AuditError(invalid_value("epsilon", "a finite number ≥ 0", epsilon))
    if not 0.0 <= delta < 1.0:
        raise AuditError(invalid_value("delta", "a number in [0, 1)", delta))
    bound = np.minimum(1.0, math.exp(epsilon) * np.asarray(fpr, dtype=np.float64) + delta)
    return float(bound) if np.ndim(bound) == 0 else bound


def bound_violations(figures: AttackFigures, epsilon: float, delta: float) -> list[str]:
    """One line per reported FPR whose TPR lower confidence limit exceeds the DP bound.

    The bound holds for every attack, so a violation means the DP training or its accounting
    is wrong (or, with probability about (1 − level)/2 per line, chance).
    """
    lines = []
    for fpr in FPR_POINTS:
        limit = float(dp_bound(fpr, epsilon, delta))
        low = figures.tpr_ci[fpr].low
        if low > limit:
            lines.append(
                f"TPR at FPR {fpr * 100:g} %: lower {figures.level * 100:g} % limit {low:.4f}"
                f" > e^ε·FPR + δ = {limit:.4f} (ε={epsilon:g}, δ={delta:g})"
            )
    return lines

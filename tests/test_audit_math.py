"""simulations.audit.mia_math against brute-force oracles written here, loop by loop."""

from __future__ import annotations

import itertools
import math
import re
from fractions import Fraction

import numpy as np
import pytest

from common.errors import FedclinicError
from simulations.audit.mia_math import (
    FPR_POINTS,
    AttackFigures,
    AuditError,
    Interval,
    attack_figures,
    bound_violations,
    class_calibrated,
    dp_bound,
    example_loss,
    lira_offline_scores,
    logit_confidence,
    roc_auc,
    roc_curve,
    shadow_assignment,
    tpr_at_fpr,
)

LN10 = math.log(10.0)


# -- factories and oracles -------------------------------------------------------------------
def tied_scores(seed: int, size: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Scores rounded to one decimal (many ties), members shifted up a little."""
    rng = np.random.default_rng(seed)
    is_member = rng.random(size) < 0.4
    is_member[:2] = [True, False]
    scores = np.round(rng.normal(size=size) + 0.5 * is_member, 1)
    return scores, is_member


def normal_scores(
    seed: int, members: int, non_members: int, shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Members ~ N(shift, 1), non-members ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(shift, 1.0, members), rng.normal(0.0, 1.0, non_members)])
    return scores, np.arange(members + non_members) < members


def pairwise_auc(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Mann-Whitney: the share of (member, non-member) pairs the member wins, ties ½."""
    pairs = itertools.product(scores[is_member], scores[~is_member])
    wins = sum(1.0 if m > n else 0.5 if m == n else 0.0 for m, n in pairs)
    return wins / (is_member.sum() * (~is_member).sum())


def threshold_points(scores: np.ndarray, is_member: np.ndarray) -> list[tuple[Fraction, Fraction]]:
    """(FPR, TPR) as exact fractions of "member iff score ≥ t" for t = +∞, then every distinct
    score from the highest down."""
    positives, negatives = int(is_member.sum()), int((~is_member).sum())
    points = []
    for t in [math.inf, *sorted(set(scores.tolist()), reverse=True)]:
        called = [s >= t for s in scores.tolist()]
        tp = sum(c and m for c, m in zip(called, is_member.tolist(), strict=True))
        fp = sum(c and not m for c, m in zip(called, is_member.tolist(), strict=True))
        points.append((Fraction(fp, negatives), Fraction(tp, positives)))
    return points


def brute_tpr(scores: np.ndarray, is_member: np.ndarray, fpr: float) -> float:
    allowed = [tpr for f, tpr in threshold_points(scores, is_member) if f <= Fraction(fpr)]
    return float(max(allowed))


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def figures(low_01: float, low_1: float) -> AttackFigures:
    """Fabricated figures whose TPR lower limits at 0.1 % and 1 % FPR are the given ones."""
    return AttackFigures(
        auc=0.9,
        auc_ci=Interval(0.85, 0.95),
        tpr={0.001: low_01 + 0.01, 0.01: low_1 + 0.01},
        tpr_ci={0.001: Interval(low_01, low_01 + 0.02), 0.01: Interval(low_1, low_1 + 0.02)},
        members=500,
        non_members=2000,
    )


# -- ROC, AUC, TPR at FPR --------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_pairwise_count_with_ties(seed: int) -> None:
    scores, is_member = tied_scores(seed)

    assert roc_auc(scores, is_member) == pytest.approx(pairwise_auc(scores, is_member))


@pytest.mark.parametrize("seed", range(4))
def test_roc_curve_matches_threshold_enumeration(seed: int) -> None:
    scores, is_member = tied_scores(seed)
    expected = threshold_points(scores, is_member)

    fpr, tpr = roc_curve(scores, is_member)

    assert fpr.tolist() == pytest.approx([float(f) for f, _ in expected])
    assert tpr.tolist() == pytest.approx([float(t) for _, t in expected])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("seed", "fpr"), itertools.product(range(3), [0.0, 0.001, 0.01, 0.02, 0.1, 0.35, 1.0])
)
def test_tpr_at_fpr_matches_threshold_enumeration(seed: int, fpr: float) -> None:
    scores, is_member = tied_scores(seed, size=150)

    assert tpr_at_fpr(scores, is_member, fpr) == pytest.approx(brute_tpr(scores, is_member, fpr))


def test_tpr_at_fpr_allows_exactly_the_fpr_share_of_false_positives() -> None:
    # 100 non-members at 0..99, members at 99.5 and 97.5: at FPR 1 % one false positive is allowed
    scores = np.array([*range(100), 99.5, 97.5])
    is_member = np.arange(102) >= 100

    assert tpr_at_fpr(scores, is_member, 0.0) == pytest.approx(0.5)
    assert tpr_at_fpr(scores, is_member, 0.01) == pytest.approx(0.5)
    assert tpr_at_fpr(scores, is_member, 0.02) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_scores_independent_of_membership_give_chance_auc(seed: int) -> None:
    members, non_members = 400, 600
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=members + non_members)
    is_member = rng.permutation(np.arange(members + non_members) < members)
    # null sd of the Mann-Whitney AUC; 4 sd leaves a chance of 6e-5 per seed to fail by chance
    null_sd = math.sqrt((members + non_members + 1) / (12 * members * non_members))

    assert abs(roc_auc(scores, is_member) - 0.5) < 4 * null_sd


def test_separated_scores_give_auc_and_low_fpr_tpr_near_one() -> None:
    scores, is_member = normal_scores(seed=0, members=500, non_members=2000, shift=8.0)

    assert roc_auc(scores, is_member) > 0.999
    assert tpr_at_fpr(scores, is_member, 0.001) > 0.99


@pytest.mark.parametrize(
    ("scores", "is_member", "message"),
    [
        (
            [0.1, 0.2, 0.3],
            [False, False, False],
            "Invalid value for `is_member`. "
            "Expected at least one member and one non-member. Received: '0 members, 3 non-members'",
        ),
        (
            [0.1, 0.2],
            [True, True],
            "Invalid value for `is_member`. "
            "Expected at least one member and one non-member. Received: '2 members, 0 non-members'",
        ),
        (
            [0.1, 0.2, 0.3],
            [True, False],
            "Invalid value for `is_member`. "
            "Expected one flag per score (equal 1-D shapes). "
            "Received: 'scores (3,), is_member (2,)'",
        ),
        (
            [0.1, 0.2],
            [1, 0],
            "Invalid value for `is_member`. Expected a boolean array. Received: 'int64'",
        ),
        (
            [0.1, math.nan],
            [True, False],
            "Invalid value for `scores`. Expected finite numbers. Received: 'NaN or infinity'",
        ),
    ],
)
def test_bad_scores_raise_one_line(
    scores: list[float], is_member: list[bool], message: str
) -> None:
    for call in (roc_curve, roc_auc, attack_figures):
        with pytest.raises(AuditError, match=f"^{re.escape(message)}$"):
            call(np.array(scores), np.array(is_member))
    with pytest.raises(AuditError, match=f"^{re.escape(message)}$"):
        tpr_at_fpr(np.array(scores), np.array(is_member), 0.01)


def test_audit_error_is_a_fedclinic_error_and_a_value_error() -> None:
    assert issubclass(AuditError, FedclinicError)
    assert issubclass(AuditError, ValueError)


# -- per-example statistics ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "label", "loss", "phi"),
    [
        ([0.2, 0.8], 1, -math.log(0.8), math.log(4.0)),
        ([0.5, 0.3, 0.2], 2, -math.log(0.2), math.log(0.2 / 0.8)),
        ([1.0, 0.0], 0, 0.0, 45 * LN10),  # p_y = 1: φ at the floor 1e-45, finite
        ([1.0, 0.0], 1, 45 * LN10, -45 * LN10),  # p_y = 0: loss and φ finite
        ([1e-15, 1.0], 1, 0.0, 15 * LN10),  # 1 − p_y from the other classes, not from p_y
    ],
)
def test_loss_and_logit_confidence_against_hand_values(
    row: list[float], label: int, loss: float, phi: float
) -> None:
    probabilities, labels = np.array([row]), np.array([label])

    assert example_loss(probabilities, labels).tolist() == pytest.approx([loss])
    assert logit_confidence(probabilities, labels).tolist() == pytest.approx([phi])


def test_loss_is_never_negative_zero() -> None:
    loss = example_loss(np.array([[1.0, 0.0]]), np.array([0]))

    assert math.copysign(1.0, float(loss[0])) == 1.0


@pytest.mark.parametrize(
    ("probabilities", "labels", "message"),
    [
        (
            np.ones(3),
            np.array([0, 1, 0]),
            "Invalid value for `probabilities`. "
            "Expected an array (N, C) with C ≥ 2. Received: (3,)",
        ),
        (
            np.ones((2, 2)),
            np.array([0.0, 1.0]),
            "Invalid value for `labels`. "
            "Expected integer labels of shape (2,). Received: 'float64 (2,)'",
        ),
        (
            np.ones((2, 2)),
            np.array([0, 2]),
            "Invalid value for `labels`. Expected labels in [0, 1]. Received: [0, 2]",
        ),
    ],
)
def test_bad_probabilities_raise_one_line(
    probabilities: np.ndarray, labels: np.ndarray, message: str
) -> None:
    for call in (example_loss, logit_confidence):
        with pytest.raises(AuditError, match=f"^{re.escape(message)}$"):
            call(probabilities, labels)


# -- shadow models and offline LiRA ----------------------------------------------------------
@pytest.mark.parametrize(("candidates", "shadows"), [(1000, 8), (333, 16), (5, 2)])
def test_shadow_assignment_puts_each_candidate_in_half_the_shadows(
    candidates: int, shadows: int
) -> None:
    assignment = shadow_assignment(candidates, shadows, seed=3)
    # each shadow's size is Binomial(N, ½) across candidates: sd √N / 2, allow 5 sd
    tolerance = 5 * math.sqrt(candidates) / 2

    assert assignment.shape == (shadows, candidates)
    assert assignment.dtype == np.bool_
    assert (assignment.sum(axis=0) == shadows // 2).all()
    assert (np.abs(assignment.sum(axis=1) - candidates / 2) <= tolerance).all()


def test_shadow_assignment_is_reproducible_by_seed() -> None:
    first, again = shadow_assignment(200, 8, seed=7), shadow_assignment(200, 8, seed=7)
    other = shadow_assignment(200, 8, seed=8)

    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    ("candidates", "shadows", "message"),
    [
        (10, 7, "Invalid value for `num_shadows`. Expected an even integer ≥ 2. Received: 7"),
        (10, 0, "Invalid value for `num_shadows`. Expected an even integer ≥ 2. Received: 0"),
        (10, -2, "Invalid value for `num_shadows`. Expected an even integer ≥ 2. Received: -2"),
        (10, 8.0, "Invalid value for `num_shadows`. Expected an even integer ≥ 2. Received: 8.0"),
        (0, 8, "Invalid value for `num_candidates`. Expected an integer ≥ 1. Received: 0"),
    ],
)
def test_shadow_assignment_rejects_bad_counts(candidates: int, shadows: int, message: str) -> None:
    with pytest.raises(AuditError, match=f"^{re.escape(message)}$"):
        shadow_assignment(candidates, shadows, seed=0)


def lira_loop(target: np.ndarray, shadow_phi: np.ndarray, shadow_in: np.ndarray) -> list[float]:
    """Offline LiRA candidate by candidate: OUT means, one pooled population sd, z-scores."""
    shadows, candidates = shadow_phi.shape
    means, residuals = [], []
    for n in range(candidates):
        outs = [float(shadow_phi[k, n]) for k in range(shadows) if not shadow_in[k, n]]
        means.append(sum(outs) / len(outs))
        residuals += [v - means[n] for v in outs]
    sigma = math.sqrt(sum(r * r for r in residuals) / len(residuals))
    return [(float(target[n]) - means[n]) / sigma for n in range(candidates)]


@pytest.mark.parametrize("seed", range(3))
def test_lira_offline_matches_candidate_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shadow_in = rng.random((8, 30)) < 0.5
    shadow_in[:, 0] = [True] * 7 + [False]  # one candidate with a single OUT shadow
    shadow_phi = rng.normal(size=(8, 30)) + 2.0 * shadow_in
    target = rng.normal(size=30)

    scores = lira_offline_scores(target, shadow_phi, shadow_in)

    assert scores.tolist() == pytest.approx(lira_loop(target, shadow_phi, shadow_in))


def test_lira_separates_members_that_shadows_fit() -> None:
    # φ of an IN model is 3 higher; the target trained on the first half of the candidates
    rng = np.random.default_rng(0)
    shadow_in = shadow_assignment(400, 8, seed=1)
    shadow_phi = rng.normal(size=(8, 400)) + 3.0 * shadow_in
    is_member = np.arange(400) < 200
    target = rng.normal(size=400) + 3.0 * is_member

    assert roc_auc(lira_offline_scores(target, shadow_phi, shadow_in), is_member) > 0.95


@pytest.mark.parametrize(
    ("shadow_phi", "shadow_in", "message"),
    [
        (
            np.zeros((4, 3)),
            np.zeros((4, 2), dtype=bool),
            "Invalid value for `shadow_phi`. "
            "Expected an array (K, N) for N targets. "
            "Received: 'target_phi (2,), shadow_phi (4, 3)'",
        ),
        (
            np.zeros((4, 2)),
            np.zeros((4, 2), dtype=int),
            "Invalid value for `shadow_in`. Expected a bool array (4, 2). Received: 'int64 (4, 2)'",
        ),
        (
            np.zeros((2, 2)),
            np.array([[False, True], [True, True]]),
            "Invalid value for `shadow_in`. "
            "Expected every candidate OUT of some shadow. Received: 'candidate 1 IN all 2 shadows'",
        ),
        (
            np.ones((2, 2)),
            np.array([[True, False], [False, True]]),
            "Invalid value for `shadow_phi`. Expected OUT values that vary. Received: 0.0",
        ),
    ],
)
def test_lira_rejects_bad_shadows(
    shadow_phi: np.ndarray, shadow_in: np.ndarray, message: str
) -> None:
    with pytest.raises(AuditError, match=f"^{re.escape(message)}$"):
        lira_offline_scores(np.zeros(2), shadow_phi, shadow_in)


# -- class calibration -----------------------------------------------------------------------
def test_class_calibration_is_a_quantile_within_each_class() -> None:
    scores = np.array([1.0, 3.0, 2.0, 10.0, 14.0, 12.0, 5.0])
    labels = np.array([0, 0, 0, 1, 1, 1, 0])
    reference = np.array([True, True, False, True, True, False, False])

    got = class_calibrated(scores, labels, reference)

    # class 0: reference 1 and 3; class 1: 10 and 14 (a tie counts half)
    assert got.tolist() == [0.25, 0.75, 0.5, 0.25, 0.75, 0.5, 1.0]


def test_class_calibration_removes_a_class_mix_that_passes_for_membership() -> None:
    # Prepare: a score that depends on the class only; members 98 % class 1, non-members 74 %
    rng = np.random.default_rng(3)
    members, non_members = 650, 2854
    labels = np.concatenate([rng.random(members) < 0.98, rng.random(non_members) < 0.74]).astype(
        np.int64
    )
    is_member = np.arange(members + non_members) < members
    scores = labels * 2.0 + rng.normal(size=labels.size)
    # Execute
    raw = roc_auc(scores, is_member)
    calibrated = roc_auc(class_calibrated(scores, labels, ~is_member), is_member)
    # Assert: the raw score "finds" members; calibrated, it is at chance (4 null sd)
    null_sd = math.sqrt((members + non_members + 1) / (12.0 * members * non_members))
    assert raw > 0.5 + 8 * null_sd
    assert abs(calibrated - 0.5) <= 4 * null_sd


def test_class_calibration_removes_a_class_difference_in_the_tail() -> None:
    # Prepare: same mean and std in both classes, but class 0's scores have a long right
    # tail and class 1's a long left one; members all class 0, non-members 74 % class 1; no
    # membership signal
    rng = np.random.default_rng(5)
    members, non_members = 650, 2854
    labels = np.concatenate([np.zeros(members), rng.random(non_members) < 0.74]).astype(np.int64)
    is_member = np.arange(members + non_members) < members
    skewed = rng.exponential(size=labels.size) - 1.0  # mean 0, std 1
    scores = np.where(labels == 0, skewed, -skewed)
    # Execute
    raw = tpr_at_fpr(scores, is_member, 0.01)
    calibrated = tpr_at_fpr(class_calibrated(scores, labels, ~is_member), is_member, 0.01)
    # Assert: the tail "finds" members at 1 % FPR (z-scores would too: mean and std are
    # equal); calibrated, TPR is at chance (4 sd)
    chance_sd = math.sqrt(0.01 * 0.99 / members)
    assert raw > 0.01 + 8 * chance_sd
    assert calibrated <= 0.01 + 4 * chance_sd


def test_a_class_without_reference_scores_uses_the_pooled_ones() -> None:
    scores = np.array([0.0, 2.0, 7.0])
    labels = np.array([0, 0, 1])
    reference = np.array([True, True, False])

    assert class_calibrated(scores, labels, reference).tolist() == [0.25, 0.75, 1.0]


def test_class_calibration_needs_two_reference_scores() -> None:
    message = "Invalid value for `reference`. Expected at least 2 reference scores. Received: 1"
    with pytest.raises(AuditError, match=f"^{re.escape(message)}$"):
        class_calibrated(np.zeros(3), np.zeros(3), np.array([True, False, False]))


# -- figures with bootstrap intervals --------------------------------------------------------
def test_attack_figures_point_values_match_the_single_functions() -> None:
    scores, is_member = tied_scores(seed=1, size=300)

    result = attack_figures(scores, is_member, bootstrap=50, seed=0)

    assert result.auc == pytest.approx(pairwise_auc(scores, is_member))
    assert set(result.tpr) == set(result.tpr_ci) == set(FPR_POINTS)
    for fpr in FPR_POINTS:
        assert result.tpr[fpr] == pytest.approx(brute_tpr(scores, is_member, fpr))
        assert result.tpr_ci[fpr].low <= result.tpr_ci[fpr].high
    assert (result.members, result.non_members) == (int(is_member.sum()), int((~is_member).sum()))
    assert result.auc_ci.low <= result.auc_ci.high


def test_attack_figures_are_reproducible_by_seed() -> None:
    scores, is_member = normal_scores(seed=0, members=100, non_members=300, shift=1.0)

    first = attack_figures(scores, is_member, bootstrap=100, seed=5)
    again = attack_figures(scores, is_member, bootstrap=100, seed=5)
    other = attack_figures(scores, is_member, bootstrap=100, seed=6)

    assert first == again
    assert other.auc == first.auc
    assert other.auc_ci != first.auc_ci


def test_bootstrap_intervals_cover_the_true_auc() -> None:
    # Members ~ N(Δ, 1), non-members ~ N(0, 1): a member outscores a non-member with probability
    # P(X − Y > 0), X − Y ~ N(Δ, 2), so the true AUC is Φ(Δ/√2). Each of R independent data sets
    # gives a 90 % interval; the number that cover the true AUC is Binomial(R, 0.9) if the
    # intervals are right: sd √(0.9 · 0.1 / R) = 0.021 for R = 200. The percentile bootstrap
    # under-covers slightly at n = 100 per class (measured 0.886 over 1500 data sets), so the band
    # is [0.9 − 4 sd, 0.9 + 3 sd] = [0.815, 0.964]: at the measured 0.886 a chance failure is
    # < 0.2 %, while intervals of the wrong width (an 80 % or a 99 % interval, or no resampling
    # at all) fall outside it.
    delta, repeats, level = 1.0, 200, 0.9
    true_auc = normal_cdf(delta / math.sqrt(2.0))
    sd = math.sqrt(level * (1 - level) / repeats)
    covered = 0
    for seed in range(repeats):
        scores, is_member = normal_scores(seed, members=100, non_members=100, shift=delta)
        interval = attack_figures(scores, is_member, bootstrap=200, level=level, seed=seed).auc_ci
        covered += interval.low <= true_auc <= interval.high

    assert level - 4 * sd <= covered / repeats <= level + 3 * sd


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bootstrap": 0}, "Invalid value for `bootstrap`. Expected an integer ≥ 1. Received: 0"),
        ({"level": 1.0}, "Invalid value for `level`. Expected a number in (0, 1). Received: 1.0"),
    ],
)
def test_attack_figures_rejects_bad_options(kwargs: dict[str, float], message: str) -> None:
    scores, is_member = tied_scores(seed=0)

    with pytest.raises(AuditError, match=f"^{re.escape(message)}$"):
        attack_figures(scores, is_member, **kwargs)  # type: ignore[arg-type]


# -- the DP bound ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fpr", "epsilon", "delta", "expected"),
    [
        (0.001, 1.0, 1e-5, math.e * 0.001 + 1e-5),
        (0.01, 3.0, 1e-5, math.exp(3.0) * 0.01 + 1e-5),
        (0.0, 8.0, 1e-5, 1e-5),
        (0.01, 8.0, 1e-5, 1.0),  # e^8 · 0.01 = 29.8: capped at 1
        (0.5, 0.0, 0.0, 0.5),
    ],
)
def test_dp_bound_values(fpr: float, epsilon: float, delta: float, expected: float) -> None:
    assert dp_bound(fpr, epsilon, delta) == pytest.approx(expected)


def test_dp_bound_on_an_array() -> None:
    bound = dp_bound(np.array([0.0, 0.001, 0.5]), 1.0, 1e-5)

    assert isinstance(bound, np.ndarray)
    assert bound.tolist() == pytest.approx([1e-5, math.e * 0.001 + 1e-5, 1.0])


@pytest.mark.parametrize(
    ("epsilon", "delta", "message"),
    [
        (-1.0, 1e-5, "Invalid value for `epsilon`. Expected a finite number ≥ 0. Received: -1.0"),
        (
            math.inf,
            1e-5,
            "Invalid value for `epsilon`. Expected a finite number ≥ 0. Received: inf",
        ),
        (1.0, 1.0, "Invalid value for `delta`. Expected a number in [0, 1). Received: 1.0"),
    ],
)
def test_dp_bound_rejects_bad_privacy(epsilon: float, delta: float, message: str) -> None:
    with pytest.raises(AuditError, match=f"^{re.escape(message)}$"):
        dp_bound(0.01, epsilon, delta)


def test_bound_violation_names_fpr_limit_and_bound() -> None:
    # ε = 1, δ = 1e-5: bound 0.0027 at 0.1 % (0.0123 exceeds it), 0.0272 at 1 % (0.02 does not)
    lines = bound_violations(figures(low_01=0.0123, low_1=0.02), epsilon=1.0, delta=1e-5)

    assert lines == [
        "TPR at FPR 0.1 %: lower 95 % limit 0.0123 > e^ε·FPR + δ = 0.0027 (ε=1, δ=1e-05)"
    ]


def test_lower_limit_equal_to_the_bound_is_no_violation() -> None:
    at_bound = float(dp_bound(0.001, 1.0, 1e-5))

    assert bound_violations(figures(low_01=at_bound, low_1=0.0), epsilon=1.0, delta=1e-5) == []


def test_bound_check_fails_on_a_roc_above_the_bound_and_passes_below_it() -> None:
    # 30 % of the members score above every non-member: TPR ≈ 0.3 at FPR 0, far above the
    # ε = 1 bound (0.0027 at 0.1 %, 0.027 at 1 %); ε = 8 allows TPR 1 at both FPRs.
    scores, is_member = normal_scores(seed=0, members=500, non_members=2000, shift=0.0)
    exposed = np.flatnonzero(is_member)[:150]
    scores[exposed] = 10.0
    leaky = attack_figures(scores, is_member, bootstrap=200, seed=0)
    # scores independent of membership: an attack at chance
    blind = attack_figures(*normal_scores(1, 500, 2000, shift=0.0), bootstrap=200, seed=0)

    assert len(bound_violations(leaky, epsilon=1.0, delta=1e-5)) == 2
    assert bound_violations(leaky, epsilon=8.0, delta=1e-5) == []
    assert bound_violations(blind, epsilon=1.0, delta=1e-5) == []

"""The membership audit as a library call (simulations/audit/membership.py).

A fabricated run of three simulated hospitals (two trained) on random images with random
labels, whose ``model.keras`` either memorised exactly the members (over-fitted) or
memorised other images only (saw none of the candidates). Shadow federations and the
update attack are injected: the same memoriser in-process, and a fake update. Oracles:
numpy probabilities of the memoriser, the rank-sum AUC of ``common.metrics``, and the null
distribution of the AUC, whose standard deviation is √((m + n + 1) / (12·m·n)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from common.metrics import binary_auc
from simulations.audit.candidates import Candidates, load_candidates
from simulations.audit.membership import audit_membership
from simulations.audit.rows import AuditResult
from simulations.audit.shadows import ShadowJob
from simulations.audit.update_attack import UpdateAttack
from tests.audit_factories import (
    audit_settings,
    memorizer,
    memorizer_probabilities,
    save_memorizer,
    write_run,
    write_tiny_npz,
)

HOSPITALS, TRAINED = 3, (0, 1)
BOOTSTRAP = 200


def train_shadow(job: ShadowJob) -> np.ndarray:
    """The in-process shadow: the memoriser on the shadow's half of the candidates."""
    chosen = job.candidates
    weights = memorizer(chosen.images[job.train], chosen.labels[job.train], seed=job.seed)
    return memorizer_probabilities(weights, chosen.images)


@dataclass
class FakeUpdate:
    """An update attack whose scores separate ``hospital``'s members by ``shift``."""

    shift: float = 2.0
    epsilon: float | None = None
    asked: int | None = None

    def __call__(
        self, run_dir: Path, candidates: Candidates, hospital: int, *, seed: int = 0
    ) -> UpdateAttack:
        self.asked = hospital
        rng = np.random.default_rng(seed + 11)
        scores = rng.standard_normal(len(candidates)) + self.shift * (
            candidates.hospital == hospital
        )
        return UpdateAttack(scores, hospital, 2, self.epsilon, 0.61)


@dataclass(frozen=True)
class Case:
    run_dir: Path
    data: Path
    candidates: Candidates
    probabilities: np.ndarray  # the target model's, computed in numpy


def make_case(root: Path, *, overfit: bool, **settings: object) -> Case:
    """A run directory whose model memorised the members (``overfit``) or other images."""
    data = root / "data.npz"
    if not data.exists():
        write_tiny_npz(data, train=300, val=40, test=100)
    name = f"run-{'overfit' if overfit else 'unseen'}-{len(list(root.iterdir()))}"
    epsilons = settings.pop("epsilons", None)
    run_dir = write_run(
        root / name,
        audit_settings(data, **settings),
        hospitals=HOSPITALS,
        trained=TRAINED,
        epsilons=epsilons,  # type: ignore[arg-type]
    )
    candidates = load_candidates(run_dir, data)
    if overfit:
        members = candidates.is_member
        weights = memorizer(candidates.images[members], candidates.labels[members], seed=1)
    else:
        rng = np.random.default_rng(99)
        others = rng.integers(0, 256, size=(200, 8, 8, 1)).astype(np.float32) / 255.0
        weights = memorizer(others, rng.integers(0, 2, size=200), seed=1)
    save_memorizer(weights, run_dir / "model.keras")
    return Case(run_dir, data, candidates, memorizer_probabilities(weights, candidates.images))


def per_class_quantile(values: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each value's share of same-class reference values below it (ties count half)."""
    out = np.empty(len(values))
    for n, (value, label) in enumerate(zip(values, labels, strict=True)):
        own = values[(labels == label) & reference]
        out[n] = (np.sum(own < value) + 0.5 * np.sum(own == value)) / own.size
    return out


def null_sd(members: int, non_members: int) -> float:
    return math.sqrt((members + non_members + 1) / (12.0 * members * non_members))


def audit(case: Case, shadows: int = 8, **options: object) -> AuditResult:
    update = options.pop("update", FakeUpdate())
    return audit_membership(
        case.run_dir,
        case.data,
        shadow_models=shadows,
        bootstrap=BOOTSTRAP,
        train_shadow=train_shadow,
        update_scores=update,  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="module")
def overfit(root: Path) -> tuple[Case, AuditResult]:
    case = make_case(root, overfit=True)
    return case, audit(case)


@pytest.fixture(scope="module")
def unseen(root: Path) -> tuple[Case, AuditResult]:
    case = make_case(root, overfit=False)
    return case, audit(case)


def test_rows_are_each_attack_overall_and_per_hospital_then_the_update(
    overfit: tuple[Case, AuditResult],
) -> None:
    # Prepare
    case, result = overfit
    # Execute
    keys = [(row.target, row.attack, row.hospital) for row in result.rows]
    # Assert
    per_attack = [("all",), ("hospital-0",), ("hospital-1",)]
    expected = [("global", attack, *h) for attack in ("loss", "lira") for h in per_attack]
    biggest = int(np.argmax(np.bincount(case.candidates.hospital[case.candidates.is_member])))
    assert keys == [*expected, ("update", "loss", f"hospital-{biggest}")]
    assert result.lowest_fpr == 1.0 / int((~case.candidates.is_member).sum())
    assert result.notes == ()


def test_loss_attack_rows_match_an_independent_auc(overfit: tuple[Case, AuditResult]) -> None:
    # Prepare
    case, result = overfit
    chosen = case.candidates
    raw = np.log(case.probabilities[np.arange(len(chosen)), chosen.labels])
    confidence = per_class_quantile(raw, chosen.labels, ~chosen.is_member)
    # Execute
    rows = {row.hospital: row for row in result.rows[:3]}  # the global model's loss attack
    # Assert
    for name, row in rows.items():
        partition = -2 if name == "all" else int(name.split("-")[1])
        keep = ~chosen.is_member | (chosen.hospital == partition) | (partition == -2)
        expected = binary_auc(chosen.is_member[keep], confidence[keep])
        assert row.figures.auc == pytest.approx(expected, abs=0.01)
        assert row.figures.members == int(chosen.is_member[keep].sum())
        assert row.figures.non_members == int((~chosen.is_member).sum())


@pytest.mark.parametrize("attack", ["loss", "lira"])
def test_attacks_find_the_members_of_an_over_fitted_model(
    overfit: tuple[Case, AuditResult], attack: str
) -> None:
    # Prepare
    _, result = overfit
    # Execute
    row = next(r for r in result.rows if r.attack == attack and r.hospital == "all")
    # Assert: the whole interval far outside the AUC's null distribution (6 sd)
    figures = row.figures
    assert figures.auc_ci.low > 0.5 + 6 * null_sd(figures.members, figures.non_members)


def test_attacks_are_at_chance_on_a_model_that_saw_no_candidate(
    unseen: tuple[Case, AuditResult],
) -> None:
    # Prepare
    _, result = unseen
    # Execute
    rows = [row for row in result.rows if row.target == "global"]
    # Assert: within 4 standard deviations of the null distribution (p ≈ 6e-5 per row)
    assert len(rows) == 6
    for row in rows:
        figures = row.figures
        tolerance = 4 * null_sd(figures.members, figures.non_members)
        assert abs(figures.auc - 0.5) <= tolerance, (row.attack, row.hospital, figures.auc)


def test_update_row_is_that_hospitals_members_against_all_non_members(root: Path) -> None:
    # Prepare
    case = make_case(root, overfit=True)
    update = FakeUpdate()
    # Execute
    result = audit(case, shadows=0, update=update, update_hospital="hospital-0")
    # Assert
    row = result.rows[-1]
    chosen = case.candidates
    keep = (chosen.hospital == 0) | ~chosen.is_member
    raw = update(case.run_dir, chosen, 0).scores
    expected_scores = per_class_quantile(raw, chosen.labels, ~chosen.is_member)[keep]
    assert update.asked == 0
    assert (row.target, row.attack, row.hospital) == ("update", "loss", "hospital-0")
    assert row.figures.members == int((chosen.hospital == 0).sum())
    assert row.figures.non_members == int((~chosen.is_member).sum())
    assert row.figures.auc == pytest.approx(binary_auc(chosen.is_member[keep], expected_scores))
    assert row.model_auc == 0.61
    assert result.notes == ("LiRA skipped: --shadow-models 0 (loss attack only)",)


def test_a_secure_aggregation_run_says_what_its_update_row_means(root: Path) -> None:
    case = make_case(root, overfit=True, secure_aggregation=True, min_train_nodes=3)

    result = audit(case, shadows=0, update=FakeUpdate())

    assert result.notes[-1] == (
        "secure aggregation was on: this run's coordinator saw only the masked sum; the "
        "update row shows what one hospital's update would have revealed without it"
    )


@pytest.mark.parametrize(
    ("settings", "update_epsilon", "verdict", "epsilons"),
    [
        ({}, 1.0, "no-dp", [None, None, None, None]),
        (
            {"dp": "record", "epsilons": {0: 0.01, 1: 0.02}},
            0.05,
            "fail",
            [0.02, 0.01, 0.02, 0.05],
        ),
        ({"dp": "record", "epsilons": {0: 8.0, 1: 9.0}}, 9.0, "pass", [9.0, 8.0, 9.0, 9.0]),
        # hospital level: group privacy over two add/remove steps; the update is not bounded
        ({"dp": "hospital", "epsilons": {0: 4.0, 1: 4.0}}, 4.0, "pass", [8.0, 8.0, 8.0, None]),
    ],
)
def test_dp_bound_of_each_row_and_the_verdict(
    root: Path,
    settings: dict[str, object],
    update_epsilon: float,
    verdict: str,
    epsilons: list[float | None],
) -> None:
    # Prepare: an update attack that finds nearly every member at FPR 0.1 %
    case = make_case(root, overfit=True, **settings)
    update = FakeUpdate(shift=8.0, epsilon=update_epsilon)
    # Execute
    result = audit(case, shadows=0, update=update, update_hospital="hospital-1")
    # Assert: e^ε·FPR + δ at ε ≥ 8 is 1 at both FPRs (never exceeded); at ε 0.05, 0.0105
    assert [row.to_json()["epsilon"] for row in result.rows] == epsilons
    assert result.verdict == verdict
    assert bool(result.violations) == (verdict == "fail")
    if verdict == "fail":
        assert result.violations[0].startswith("update of hospital-1, loss-change attack: ")
        assert result.rows[-1].to_json()["bound_violations"] == [
            line.split(": ", 1)[1] for line in result.violations
        ]


def test_json_has_exactly_the_contracts_fields(overfit: tuple[Case, AuditResult]) -> None:
    # Prepare
    case, result = overfit
    # Execute
    document = result.to_json()
    # Assert
    assert list(document) == [
        "run-dir",
        "data",
        "shadow-models",
        "non-member-splits",
        "dp",
        "lowest-fpr",
        "results",
        "verdict",
    ]
    assert document["dp"] == {"mode": "off", "epsilon": None, "delta": None}
    assert document["non-member-splits"] == ["train", "val"]
    assert (document["run-dir"], document["shadow-models"]) == (str(case.run_dir), 8)
    assert document["verdict"] == "no-dp"
    for row in document["results"]:
        assert list(row) == [
            "epsilon",
            "target",
            "attack",
            "hospital",
            "auc",
            "auc_ci",
            "tpr_at_0.1%",
            "tpr_at_0.1%_ci",
            "tpr_at_1%",
            "tpr_at_1%_ci",
            "members",
            "non_members",
            "model_auc",
            "bound_violations",
        ]
        assert len(row["auc_ci"]) == len(row["tpr_at_1%_ci"]) == 2

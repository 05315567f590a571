"""The audit's results: one row per attack and target, with its figures, DP bound and
violations, and the whole result as the JSON ``fedclinic audit membership`` writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simulations.audit.bounds import Bound, RunPrivacy
from simulations.audit.candidates import Candidates

if TYPE_CHECKING:
    from simulations.audit.mia_math import AttackFigures
    from simulations.audit.update_attack import UpdateAttack


@dataclass(frozen=True)
class AuditRow:
    target: str  # "global" | "update"
    attack: str  # "loss" | "lira"
    hospital: str  # "all" | "hospital-3"
    figures: AttackFigures
    model_auc: float | None
    bound: Bound | None  # the (ε, δ) that bounds this attack; None without DP
    bound_violations: tuple[str, ...]

    @property
    def label(self) -> str:
        if self.target == "update":
            return f"update of {self.hospital}, {self.attack}-change attack"
        return f"global model, {self.attack} attack, {self.hospital}"

    def to_json(self) -> dict[str, Any]:
        figures = self.figures
        row: dict[str, Any] = {
            "epsilon": None if self.bound is None else self.bound[0],
            "target": self.target,
            "attack": self.attack,
            "hospital": self.hospital,
            "auc": figures.auc,
            "auc_ci": [figures.auc_ci.low, figures.auc_ci.high],
        }
        for fpr, label in fpr_labels().items():
            row[f"tpr_at_{label}"] = figures.tpr[fpr]
            row[f"tpr_at_{label}_ci"] = [figures.tpr_ci[fpr].low, figures.tpr_ci[fpr].high]
        row["members"] = figures.members
        row["non_members"] = figures.non_members
        row["model_auc"] = self.model_auc
        row["bound_violations"] = list(self.bound_violations)
        return row


@dataclass(frozen=True)
class AuditResult:
    run_dir: Path
    data: Path
    shadow_models: int
    non_member_splits: tuple[str, ...]
    privacy: RunPrivacy
    lowest_fpr: float  # 1 / non-members: the smallest FPR the sample resolves
    rows: tuple[AuditRow, ...]
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # plot label -> (fpr, tpr)
    notes: tuple[str, ...]  # one line each, e.g. why LiRA was skipped

    @property
    def violations(self) -> list[str]:
        """Every bound violation, each naming its row."""
        return [f"{row.label}: {line}" for row in self.rows for line in row.bound_violations]

    @property
    def verdict(self) -> str:
        if self.privacy.mode == "off":
            return "no-dp"
        return "fail" if self.violations else "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "run-dir": str(self.run_dir),
            "data": str(self.data),
            "shadow-models": self.shadow_models,
            "non-member-splits": list(self.non_member_splits),
            "dp": {
                "mode": self.privacy.mode,
                "epsilon": self.privacy.epsilon,
                "delta": self.privacy.delta,
            },
            "lowest-fpr": self.lowest_fpr,
            "results": [row.to_json() for row in self.rows],
            "verdict": self.verdict,
        }


def fpr_labels() -> dict[float, str]:
    """0.001 -> "0.1%", 0.01 -> "1%": the FPRs' names in the JSON keys."""
    from simulations.audit.mia_math import FPR_POINTS

    return {fpr: f"{fpr * 100:g}%" for fpr in FPR_POINTS}


def update_row(
    candidates: Candidates,
    chosen: int,
    update: UpdateAttack,
    privacy: RunPrivacy,
    stats: Figures,
) -> tuple[AuditRow, tuple[np.ndarray, np.ndarray]]:
    """The update attack's row and ROC: ``chosen``'s members against all non-members."""
    keep = (candidates.hospital == chosen) | ~candidates.is_member
    members = candidates.hospital[keep] == chosen
    scores = np.asarray(update.scores, dtype=np.float64)[keep]
    figures = stats.figures(scores, members)
    bound = privacy.update_bound(update.epsilon)
    name = candidates.hospital_names[chosen]
    row = AuditRow(
        "update", "loss", name, figures, update.returned_auc, bound, _broken(figures, bound)
    )
    return row, stats.roc(scores, members)


@dataclass(frozen=True)
class Figures:
    """The audit's statistics with its bootstrap settings."""

    bootstrap: int
    seed: int

    def figures(self, scores: np.ndarray, is_member: np.ndarray) -> AttackFigures:
        from simulations.audit.mia_math import attack_figures

        return attack_figures(scores, is_member, bootstrap=self.bootstrap, seed=self.seed)

    def roc(self, scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from simulations.audit.mia_math import roc_curve

        return roc_curve(scores, is_member)


def _broken(figures: AttackFigures, bound: Bound | None) -> tuple[str, ...]:
    from simulations.audit.mia_math import bound_violations

    return () if bound is None else tuple(bound_violations(figures, bound[0], bound[1]))


def global_rows(
    candidates: Candidates,
    attacks: dict[str, np.ndarray],
    model_auc: float,
    privacy: RunPrivacy,
    stats: Figures,
) -> list[AuditRow]:
    """Each attack on the global model: all members, then each member hospital's."""
    rows: list[AuditRow] = []
    for attack, scores in attacks.items():
        figures = stats.figures(scores, candidates.is_member)
        bound = privacy.global_bound()
        rows.append(
            AuditRow("global", attack, "all", figures, model_auc, bound, _broken(figures, bound))
        )
        for partition in member_hospitals(candidates):
            name = candidates.hospital_names[partition]
            keep = (candidates.hospital == partition) | ~candidates.is_member
            figures = stats.figures(scores[keep], candidates.is_member[keep])
            bound = privacy.global_bound(name)
            rows.append(
                AuditRow("global", attack, name, figures, model_auc, bound, _broken(figures, bound))
            )
    return rows


def member_hospitals(candidates: Candidates) -> list[int]:
    return [int(p) for p in np.unique(candidates.hospital[candidates.is_member])]

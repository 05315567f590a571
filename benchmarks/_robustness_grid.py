"""The robustness benchmark's grid, run settings, averages over seeds and verdicts (no I/O).

A cell is one (strategy, attack, fraction); each runs once per seed. The number of attackers
is the project's: ``round(fraction · hospitals)`` with halves rounded up
(:func:`simulations.attacks.attacker_count`), so with 10 hospitals 0.1, 0.2 and 0.3 mean
1, 2 and 3 attackers. ``none`` runs once per strategy (fraction 0.0), not once per fraction.
"""

from __future__ import annotations

import math
import statistics
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.config import AttackName
from simulations.attacks import attacker_count

STRATEGIES = (
    "fedavg",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "centeredclip",
    "fedavg+norm",
)
ATTACKS: tuple[str, ...] = typing.get_args(AttackName)  # every attack the config accepts
FRACTIONS = (0.1, 0.2, 0.3)
# attack-scale per attack: scaling multiplies the update by 10; gaussian sends N(0, 1)
# weights noise; sign-flip sends the negated update; alie and label-flip ignore it.
ATTACK_SCALE = {"sign-flip": 1.0, "scaling": 10.0, "gaussian": 1.0}
NORM_STRATEGY = "fedavg+norm"  # fedavg behind the coordinator's `max-update-norm` check
VERDICT_FRACTION = 0.2
VERDICT_TOLERANCE = 0.03  # the goal: best defence within this AUC of clean FedAvg
BASELINE = "fedavg"


@dataclass(frozen=True)
class Cell:
    """One grid cell: its labels, its attacker count and the run-config keys it sets."""

    strategy: str
    attack: str
    fraction: float
    attackers: int
    overrides: dict[str, Any] = field(compare=False)


@dataclass(frozen=True)
class Skipped:
    strategy: str
    attack: str
    fraction: float
    reason: str


def base_strategy(strategy: str) -> str:
    """The run config's ``strategy`` of a grid strategy (``fedavg+norm`` is FedAvg)."""
    return "fedavg" if strategy == NORM_STRATEGY else strategy


def cell_overrides(
    strategy: str,
    attack: str,
    fraction: float,
    attackers: int,
    hospitals: int,
    max_update_norm: float,
    trim_beta: float,
) -> dict[str, Any]:
    """The run-config keys a cell sets on top of the recipe and the strategy's settings.

    Krum, Multi-Krum and Bulyan are told the true number of attackers; FedTrimmedAvg cuts at
    least as many hospitals at each end as there are attackers (``trim_beta`` is its
    recommended value, raised to ``attackers / hospitals`` when that is larger).
    """
    values: dict[str, Any] = {
        "strategy": base_strategy(strategy),
        "attack": attack,
        "attack-fraction": fraction,
    }
    if attack in ATTACK_SCALE:
        values["attack-scale"] = ATTACK_SCALE[attack]
    if strategy in ("krum", "multikrum", "bulyan"):
        values["num-malicious-nodes"] = attackers
    if strategy == "fedtrimmedavg":
        values["trim-beta"] = max(trim_beta, attackers / hospitals)
    if strategy == NORM_STRATEGY:
        values["max-update-norm"] = max_update_norm
    return values


def skip_reason(strategy: str, attackers: int, hospitals: int, trim_beta: float) -> str | None:
    """Why a cell cannot run, or None: Flower's Bulyan needs n ≥ 4f + 3 replies, and
    FedTrimmedAvg's cut must stay below one half."""
    if strategy == "bulyan" and hospitals < 4 * attackers + 3:
        return (
            f"Bulyan needs n ≥ 4f + 3 = {4 * attackers + 3} hospitals for f = {attackers}; "
            f"n = {hospitals}"
        )
    if strategy == "fedtrimmedavg" and max(trim_beta, attackers / hospitals) >= 0.5:
        return f"trimming {attackers} of {hospitals} at each end needs trim-beta ≥ 0.5"
    return None


def expand(
    strategies: Sequence[str],
    attacks: Sequence[str],
    fractions: Sequence[float],
    hospitals: int,
    max_update_norm: float,
    trim_beta: float,
) -> tuple[list[Cell], list[Skipped]]:
    """Every cell in order strategy × attack × fraction, and the cells that cannot run."""
    cells: list[Cell] = []
    skipped: list[Skipped] = []
    for strategy in strategies:
        for attack in attacks:
            for fraction in (0.0,) if attack == "none" else fractions:
                count = attacker_count(fraction, hospitals)
                reason = skip_reason(strategy, count, hospitals, trim_beta)
                if reason is None and attack != "none" and count == 0:
                    reason = f"{fraction:g} of {hospitals} hospitals rounds to 0 attackers"
                if reason is not None:
                    skipped.append(Skipped(strategy, attack, fraction, reason))
                    continue
                values = cell_overrides(
                    strategy, attack, fraction, count, hospitals, max_update_norm, trim_beta
                )
                cells.append(Cell(strategy, attack, fraction, count, values))
    return cells, skipped


def rejections(metrics: Mapping[str, Any]) -> dict[str, int]:
    """Training updates the coordinator rejected over a run, honest and attacking."""
    attackers = set(metrics.get("outcome", {}).get("attackers", []))
    counts = {"rejected_honest": 0, "rejected_attackers": 0}
    for record in metrics.get("rounds", []):
        for node in record["nodes"]["train"].values():
            if node["status"] == "rejected":
                key = "rejected_attackers" if node["name"] in attackers else "rejected_honest"
                counts[key] += 1
    return counts


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (n − 1), 0.0 for a single seed."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(cell: Cell, per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A cell's row: mean AUC (± sample std) and accuracy over its seeds."""
    aucs = [float(run["auc"]) for run in per_seed]
    return {
        "strategy": cell.strategy,
        "attack": cell.attack,
        "fraction": cell.fraction,
        "auc": statistics.fmean(aucs),
        "auc_std": _std(aucs),
        "accuracy": statistics.fmean(float(run["accuracy"]) for run in per_seed),
        "attackers": cell.attackers,
        "seeds": [run["seed"] for run in per_seed],
        "rejected_honest": statistics.fmean(run.get("rejected_honest", 0) for run in per_seed),
        "rejected_attackers": statistics.fmean(
            run.get("rejected_attackers", 0) for run in per_seed
        ),
    }


def _find(rows: Sequence[Mapping[str, Any]], strategy: str, attack: str, fraction: float) -> Any:
    for row in rows:
        if (row["strategy"], row["attack"]) == (strategy, attack) and math.isclose(
            row["fraction"], fraction
        ):
            return row
    return None


def clean_costs(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each defence's clean AUC minus clean FedAvg's (negative: the defence costs AUC)."""
    clean = _find(rows, BASELINE, "none", 0.0)
    if clean is None:
        return {}
    return {
        row["strategy"]: row["auc"] - clean["auc"]
        for row in rows
        if row["attack"] == "none" and row["strategy"] != BASELINE
    }


def verdicts(
    rows: Sequence[Mapping[str, Any]],
    fraction: float = VERDICT_FRACTION,
    tolerance: float = VERDICT_TOLERANCE,
) -> list[str]:
    """One line per attack at ``fraction``: the best defence against clean FedAvg; then one
    line with each defence's cost with no attack."""
    clean = _find(rows, BASELINE, "none", 0.0)
    if clean is None:
        return ["no verdict: clean FedAvg (fedavg, attack none) was not run"]
    lines = []
    for attack in [a for a in ATTACKS if a != "none"]:
        defended = [
            row
            for row in rows
            if row["attack"] == attack
            and row["strategy"] != BASELINE
            and math.isclose(row["fraction"], fraction)
        ]
        if not defended:
            continue
        best = max(defended, key=lambda row: row["auc"])
        gap = best["auc"] - clean["auc"]
        met = "met" if gap >= -tolerance - 1e-9 else "missed"  # 1e-9: float rounding
        lines.append(
            f"{attack} at {fraction:.0%}: best defence {best['strategy']} AUC {best['auc']:.3f} "
            f"vs clean FedAvg {clean['auc']:.3f} ({gap:+.3f}; goal within {tolerance:g}: {met})"
        )
    costs = clean_costs(rows)
    if costs:
        lines.append(
            "cost with no attack (AUC − clean FedAvg): "
            + ", ".join(f"{name} {cost:+.3f}" for name, cost in costs.items())
        )
    return lines

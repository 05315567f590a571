"""Model selection: keep the round whose global model scored the best validation AUC.

Every round the coordinator scores the new global model on the hospitals' ``val`` splits
(the round record's ``validation``). The best round is the one with the highest
validation AUC; a tie keeps the earlier round; a round without a number (NaN, no
hospital validated) is never best. ``early-stopping-patience`` N > 0 stops the run once N
rounds in a row brought no new best (never before some round had a validation AUC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord

SELECTION_METRIC = "auc"


def validation_score(record: Mapping[str, Any]) -> float | None:
    """A round record's validation AUC, or None when it has none (or it is not finite)."""
    value = (record.get("validation") or {}).get(SELECTION_METRIC)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class BestRound:
    server_round: int
    auc: float
    arrays: ArrayRecord

    def describe(self) -> dict[str, Any]:
        """What ``metrics.json`` and a checkpoint record of it (the arrays travel apart)."""
        return {"round": self.server_round, "validation-auc": self.auc}


@dataclass
class ModelSelection:
    """The best round so far; :meth:`observe` is called once per round, in order."""

    patience: int = 0
    best: BestRound | None = None

    def observe(self, server_round: int, arrays: ArrayRecord, record: Mapping[str, Any]) -> bool:
        """Take round ``server_round``'s outcome; True when it is the new best."""
        score = validation_score(record)
        if score is None or (self.best is not None and score <= self.best.auc):
            return False
        self.best = BestRound(server_round, score, arrays)
        return True

    def stop_reason(self, server_round: int) -> str | None:
        """Why the run stops after ``server_round`` (None: it goes on)."""
        if self.patience == 0 or self.best is None:
            return None
        waited = server_round - self.best.server_round
        if waited < self.patience:
            return None
        return (
            f"stopped early after round {server_round}: no better validation AUC than round "
            f"{self.best.server_round}'s ({self.best.auc:.4f}) in {waited} rounds "
            f"(`early-stopping-patience` = {self.patience})"
        )

    def restore(self, best: Mapping[str, Any] | None, arrays: ArrayRecord | None) -> None:
        """Continue from a checkpoint's best round (``best`` None: it had none)."""
        if best is None or arrays is None:
            self.best = None
            return
        self.best = BestRound(int(best["round"]), float(best["validation-auc"]), arrays)

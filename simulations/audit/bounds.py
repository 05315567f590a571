"""The (ε, δ) that bounds each attack of the audit, from the run's config and metrics.

Record-level DP (``dp = "record"``): each hospital accounts its own ε and reports it in
every train reply (``nodes.train.<node>.metrics.epsilon``); an attack on one hospital's
members is bounded by that hospital's final ε, an attack on all members by the largest.
Hospital-level DP (``dp = "hospital"``): one ε for the federation, under add/remove of a
whole hospital. Adding or removing one patient's record changes that hospital's (clipped)
update as much as replacing the hospital, i.e. two add/remove steps, so by group privacy
the record-level bound is (2ε, (1 + e^ε)·δ). The coordinator sees each update before the
noise is added, so the update attack has no bound there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from common.config import AppConfig

Bound = tuple[float, float]  # (ε, δ)


@dataclass(frozen=True)
class RunPrivacy:
    mode: str  # "off" | "record" | "hospital"
    epsilon: float | None  # reached: the most-spent hospital (record), the federation's (hospital)
    delta: float | None
    per_hospital: dict[str, float] = field(default_factory=dict)  # record: final ε by name

    def global_bound(self, hospital: str | None = None) -> Bound | None:
        """The bound on attacking the global model for ``hospital``'s members (None: all)."""
        if self.mode == "off" or self.epsilon is None or self.delta is None:
            return None
        if self.mode == "hospital":
            return 2.0 * self.epsilon, (1.0 + math.exp(self.epsilon)) * self.delta
        epsilon = self.epsilon if hospital is None else self.per_hospital.get(hospital)
        return None if epsilon is None else (epsilon, self.delta)

    def update_bound(self, epsilon: float | None) -> Bound | None:
        """The bound on attacking one hospital's update, whose own ε is ``epsilon``."""
        if self.mode != "record" or epsilon is None or self.delta is None:
            return None
        return epsilon, self.delta


def run_privacy(config: AppConfig, rounds: list[dict[str, Any]]) -> RunPrivacy:
    """The run's DP mode, δ and the ε it reached, as ``metrics.json`` recorded them."""
    from server.report_privacy import federation_epsilons, hospital_epsilons

    mode = config.privacy.dp
    if mode == "off":
        return RunPrivacy("off", None, None)
    per_hospital: dict[str, float] = {}
    if mode == "record":
        for name, series in hospital_epsilons(rounds).items():
            spent = [value for value in series if value is not None]
            if spent:
                per_hospital[name] = spent[-1]
        reached = max(per_hospital.values(), default=None)
    else:
        federation = [value for value in federation_epsilons(rounds) if value is not None]
        reached = federation[-1] if federation else None
    return RunPrivacy(mode, reached, config.privacy.dp_delta, per_hospital)

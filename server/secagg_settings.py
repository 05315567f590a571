"""Round r's SecAgg+ settings, derived from the records of the rounds before it.

The run's history (the round records, restored on resume) decides them, so a resumed run
continues exactly: ``MW`` (the max weight) is 1 under ``dp = "hospital"`` (uniform
weights), else the largest ``num-examples`` any hospital reported in an earlier round
(1000 before any); the scale ``s`` follows :func:`common.secure_aggregation.next_scale`
from the last SecAgg+ round's record (its ``range-use-max``, or the saturation limit when a
hospital refused a saturating update, rescaled to this round's ``MW``: the weight ratio
``n/MW`` multiplies every value), or :func:`initial_scale` when there is none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.config import AppConfig
from common.contract import WEIGHT_KEY
from common.errors import RunError
from common.secagg_config import SECAGG_MODULUS
from common.secure_aggregation import SATURATION_LIMIT, SCALE_BOUNDS, TARGET_RANGE_USE, next_scale

BLOCK_KEY = "secure-aggregation"
INITIAL_MAX_WEIGHT = 1000.0


@dataclass(frozen=True)
class RoundSettings:
    scale: float
    max_weight: float


def max_weight_for(history: Iterable[Mapping[str, Any]], config: AppConfig) -> float:
    """1 under hospital-level DP, else the largest ``num-examples`` a hospital reported in a
    train node record of ``history`` (:data:`INITIAL_MAX_WEIGHT` before any)."""
    if config.privacy.dp == "hospital":
        return 1.0
    seen = [
        float(n)
        for record in history
        for outcome in record.get("nodes", {}).get("train", {}).values()
        if isinstance(n := (outcome.get("metrics") or {}).get(WEIGHT_KEY), int | float) and n > 0
    ]
    return max(seen, default=INITIAL_MAX_WEIGHT)


def initial_scale(config: AppConfig, max_weight: float) -> float:
    """A first scale putting the largest expected ``|(n/MW)·s·Δ|`` at ``TARGET_RANGE_USE``
    of the clipping range (clamped to ``SCALE_BOUNDS``).

    ``dp = "hospital"``: exact, every ``|Δ_j| ≤ ‖Δ‖₂ ≤ dp-clip-norm`` and ``n/MW = 1``.
    Else a bound on local training's movement: Adam moves a weight about ``learning-rate``
    per step; SGD ``learning-rate / (1 − momentum)`` per unit of gradient (a guess: gradients
    are not bounded); steps = ``local-steps``, or ``local-epochs · ⌈MW / batch-size⌉``.
    """
    clip, train = config.federation.secagg_clipping_range, config.train
    if config.privacy.dp == "hospital":
        bound = config.privacy.dp_clip_norm
    else:
        steps = train.local_steps or train.local_epochs * math.ceil(max_weight / train.batch_size)
        per_step = train.learning_rate
        if train.local_optimizer == "sgd":
            per_step /= 1.0 - train.local_momentum
        bound = steps * per_step
    low, high = SCALE_BOUNDS
    return min(high, max(low, TARGET_RANGE_USE * clip / bound))


def round_settings(history: Sequence[Mapping[str, Any]], config: AppConfig) -> RoundSettings:
    """Round r's scale and max weight, from the records of rounds before r."""
    max_weight = max_weight_for(history, config)
    blocks = [record[BLOCK_KEY] for record in history if BLOCK_KEY in record]
    if not blocks:
        return RoundSettings(initial_scale(config, max_weight), max_weight)
    last = blocks[-1]
    used = last.get("range-use-max")
    measured = float(used) if isinstance(used, int | float) else 0.0
    if last.get("saturated", 0):  # a refused update used more than the limit
        measured = max(measured, SATURATION_LIMIT)
    # range use ∝ s / MW: what last round's updates would use under this round's max weight
    measured *= float(last.get("max-weight", max_weight)) / max_weight
    return RoundSettings(next_scale(float(last["scale"]), measured), max_weight)


def check_sum_fits(hospitals: int, quantization_range: int) -> None:
    """The sum of ``hospitals`` quantized updates must stay below Flower's 2**32 modulus."""
    if quantization_range * hospitals >= SECAGG_MODULUS:
        raise RunError(
            f"{hospitals} hospitals were sampled, but `secagg-quantization-range` "
            f"{quantization_range} × {hospitals} ≥ 2**32: their sum would wrap. Lower it "
            f"to at most {-(-SECAGG_MODULUS // hospitals) - 1}."
        )

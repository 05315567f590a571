"""What coordinator and hospital share about secure aggregation (SecAgg+).

Under ``secure-aggregation = true`` a hospital sends its *update* (returned weights minus
received weights) multiplied by a common factor, the scale ``s`` the coordinator chooses
each round (:data:`SCALE_KEY` in the train config), so that Flower's quantization range
is well used and nothing is clipped. Flower's ``secaggplus_mod`` then multiplies it by the
hospital's weight ratio ``num-examples / max-weight`` (:data:`MAX_WEIGHT_KEY`), clips it to
±``secagg-clipping-range`` *silently*, quantizes and masks it. Before masking the hospital
measures :func:`range_use` and refuses (a recorded failure, never a silent clip) above
:data:`SATURATION_LIMIT`; it reports the value as the scalar metric :data:`RANGE_USE_KEY`,
from which the coordinator chooses the next round's scale (:func:`next_scale`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SCALE_KEY = "secagg-scale"
MAX_WEIGHT_KEY = "secagg-max-weight"
RANGE_USE_KEY = "secagg-range-use"
ARRAY_NAMES_KEY = "secagg-array-names"
"""Train config: the global model's array names, in order (the legacy layout numbers them)."""
SECAGG_CONFIG_KEYS = (SCALE_KEY, MAX_WEIGHT_KEY, ARRAY_NAMES_KEY)
"""What the coordinator adds to the train config; the hospital strips them before training."""

SATURATION_LIMIT = 0.5
"""Largest share of ±clipping-range a hospital's weighted, scaled update may use."""
TARGET_RANGE_USE = 0.125
"""The share :func:`next_scale` aims at: 4× headroom below :data:`SATURATION_LIMIT`."""
SCALE_BOUNDS = (1e-3, 1e6)


def range_use(
    delta: Sequence[np.ndarray], weight_ratio: float, scale: float, clipping_range: float
) -> float:
    """``max |weight_ratio · scale · delta| / clipping_range`` over every array (0 if empty)."""
    largest = max((float(np.max(np.abs(a))) for a in delta if a.size), default=0.0)
    return abs(weight_ratio * scale) * largest / clipping_range


def next_scale(scale: float, range_use_max: float, *, target: float = TARGET_RANGE_USE) -> float:
    """The scale that would have put last round's largest range use at ``target``.

    Clamped to :data:`SCALE_BOUNDS`; unchanged when nothing was measured (``range_use_max``
    0, NaN or infinite).
    """
    if not math.isfinite(range_use_max) or range_use_max <= 0.0:
        return scale
    low, high = SCALE_BOUNDS
    return min(high, max(low, scale * target / range_use_max))

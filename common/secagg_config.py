"""The secure-aggregation settings' rules (``secure-aggregation``, ``secagg-*``), each a
pure function returning one Keras-style line ("" when the values are valid).

:mod:`common.config` calls them from its validators; they live here so that what SecAgg+
needs and refuses reads in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import invalid_value

# What secure aggregation cannot serve: each needs every hospital's own update, and the
# coordinator then sees only their sum.
SECAGG_REFUSED_STRATEGIES: tuple[str, ...] = (
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "centeredclip",
)
SECAGG_MIN_HOSPITALS = 3
"""Fewest hospitals a SecAgg+ round aggregates: with 2, each could subtract its own update
from the sum (checked at run time, :mod:`server.secure_aggregation`)."""
SECAGG_MODULUS = 2**32  # Flower's modulus_range: the summed quantized updates must stay below it
WHY = "secure aggregation reveals only the sum of the hospitals' updates"


def shares_problem(
    shares: int | float, threshold: int | float, on: bool, min_train_nodes: int
) -> str:
    """``secagg-num-shares`` and ``secagg-reconstruction-threshold`` as Flower accepts them."""
    fraction = "a number in (0, 1] (a fraction of the sampled hospitals)"
    of_shares = "a number in (0, 1] (a fraction of the shares)"
    if isinstance(shares, float):
        shares_ok = 0.0 < shares <= 1.0
    else:
        fits = not on or shares <= min_train_nodes
        shares_ok = shares >= 3 and shares % 2 == 1 and fits
    if not shares_ok:
        most = f"≤ `min-train-nodes` ({min_train_nodes})"
        expected = f"an odd integer ≥ 3 and {most}, or {fraction}"
        return invalid_value("secagg-num-shares", expected, shares)
    if isinstance(threshold, float):
        threshold_ok, expected = 0.0 < threshold <= 1.0, of_shares
    else:  # Flower needs fewer than the shares; a fraction of shares is known at run time
        name, bound = (
            ("`secagg-num-shares`", shares)
            if isinstance(shares, int)
            else ("`min-train-nodes`", min_train_nodes)
        )
        binding = isinstance(shares, int) or on
        threshold_ok = threshold >= 2 and (threshold < bound or not binding)
        expected = f"an integer ≥ 2 and < {name} ({bound}), or {of_shares}"
    if not threshold_ok:
        return invalid_value("secagg-reconstruction-threshold", expected, threshold)
    return ""


def sum_fits_problem(on: bool, quantization_range: int, hospitals: int) -> str:
    """``hospitals`` quantized updates must sum below Flower's modulus 2**32."""
    if not on or quantization_range * hospitals < SECAGG_MODULUS:
        return ""
    limit = -(-SECAGG_MODULUS // hospitals) - 1
    expected = (
        f"an integer ≥ 2 and ≤ {limit} (the sum of {hospitals} hospitals' quantized "
        "updates, `min-available-nodes`, must stay below 2**32)"
    )
    return invalid_value("secagg-quantization-range", expected, quantization_range)


def secure_run_problem(
    strategy: str,
    strategies: Sequence[str],
    max_update_norm: float,
    attack: str,
    update_attacks: Sequence[str],
) -> str:
    """What a run with ``secure-aggregation = true`` cannot do, as one line."""
    if strategy in SECAGG_REFUSED_STRATEGIES:
        allowed = [n for n in strategies if n not in SECAGG_REFUSED_STRATEGIES]
        expected = (
            "one of " + ", ".join(repr(n) for n in allowed) + " when `secure-aggregation` "
            f"is true ({strategy} needs every hospital's update; {WHY})"
        )
        return invalid_value("strategy", expected, strategy)
    if max_update_norm > 0.0:
        expected = (
            "0 (off) when `secure-aggregation` is true (no single hospital's update "
            f"can be checked; {WHY})"
        )
        return invalid_value("max-update-norm", expected, max_update_norm)
    if attack in update_attacks:
        expected = (
            "'none' or 'label-flip' when `secure-aggregation` is true "
            f"({attack} tampers with single hospitals' updates; {WHY})"
        )
        return invalid_value("attack", expected, attack)
    return ""

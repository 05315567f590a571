"""What a simulated attacker does: who attacks, and each attack as a pure numpy function.

Which hospitals attack is fixed for a run by ``seed``: ``round(attack-fraction ·
num-partitions)`` partition ids (rounded half up) drawn without replacement. Update attacks
act on a hospital's trained weights ``w`` given the global model ``g`` it started from
(``Δ = w − g``):

- ``sign-flip``: ``g − scale·Δ``;
- ``scaling``: ``g + scale·Δ``;
- ``gaussian``: ``g + N(0, scale²)`` per element (the training is thrown away);
- ``alie`` ("A little is enough", Baruch et al. 2019): every attacker sends
  ``mean − z·std`` of the benign weights, per coordinate, with the paper's
  ``z = Φ⁻¹((n − s) / n)``, ``s = ⌊n/2 + 1⌋ − m`` for ``n`` hospitals of which ``m`` attack.

``label-flip`` acts on data instead: an attacker trains on ``num_classes − 1 − y``.
Computations run in float64; results keep the weights' dtypes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from common.seeding import derive_seed

Weights = list[np.ndarray]


def attacker_count(fraction: float, num_partitions: int) -> int:
    """``round(fraction · num_partitions)``, halves rounded up (Python's ``round`` would
    round 2.5 down to 2)."""
    return math.floor(fraction * num_partitions + 0.5)


def attacker_ids(seed: int, fraction: float, num_partitions: int) -> list[int]:
    """The partition ids that attack in a run with ``seed``, sorted."""
    count = attacker_count(fraction, num_partitions)
    if count == 0:
        return []
    rng = np.random.default_rng(derive_seed(seed, "attackers", num_partitions))
    return sorted(int(i) for i in rng.choice(num_partitions, size=count, replace=False))


def flip_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``num_classes − 1 − y``: each class trained as its mirror (binary: swapped)."""
    return (num_classes - 1 - labels).astype(labels.dtype)


def _as(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=like.dtype)


def sign_flip(weights: Weights, global_weights: Weights, scale: float) -> Weights:
    return [
        _as(g.astype(np.float64) - scale * (w.astype(np.float64) - g), w)
        for w, g in zip(weights, global_weights, strict=True)
    ]


def scaling(weights: Weights, global_weights: Weights, scale: float) -> Weights:
    return [
        _as(g.astype(np.float64) + scale * (w.astype(np.float64) - g), w)
        for w, g in zip(weights, global_weights, strict=True)
    ]


def gaussian(global_weights: Weights, scale: float, rng: np.random.Generator) -> Weights:
    return [
        _as(g.astype(np.float64) + rng.normal(0.0, scale, size=g.shape), g) for g in global_weights
    ]


def alie_z(num_hospitals: int, num_attackers: int) -> float:
    """Baruch et al.'s ``z_max`` for ``n`` hospitals of which ``m`` attack.

    ``s`` (the benign hospitals the attackers need on their side) is at least 1: with as
    many attackers as ``⌊n/2 + 1⌋`` the formula would ask for Φ⁻¹(1).
    """
    n, m = num_hospitals, num_attackers
    s = max(1, math.floor(n / 2 + 1) - m)
    return NormalDist().inv_cdf((n - s) / n)


def alie(benign: Sequence[Weights], z: float) -> Weights:
    """``mean − z·std`` (population std) of the ``benign`` weights, per coordinate."""
    layers = zip(*benign, strict=True)
    out: Weights = []
    for layer in layers:
        stacked = np.stack([a.astype(np.float64) for a in layer])
        out.append(_as(stacked.mean(axis=0) - z * stacked.std(axis=0), layer[0]))
    return out

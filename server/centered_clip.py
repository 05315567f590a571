"""Centered clipping (Karimireddy, He, Jaggi 2021, "Learning from History for Byzantine
Robust Optimization", ICML), as a FedAvg strategy; Flower does not ship it.

Each hospital's update is ``x_i`` = its returned weights minus the global weights it was
sent (all layers together form one vector). Starting from the center ``v`` (the previous
round's aggregate update; 0 in round 1) the aggregator repeats ``L`` times

    v <- v + (1/n) * sum_i clip_tau(x_i - v),   clip_tau(z) = z * min(1, tau / ||z||)

so no single hospital can move the aggregate by more than ``tau / n`` per iteration, and
when every update lies within ``tau`` of the center it is the plain (unweighted) mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAvg

from common.errors import invalid_value

Update = Sequence[np.ndarray]


def _check(radius: float, iterations: int) -> None:
    if not radius > 0.0:
        raise ValueError(invalid_value("clip-radius", "a number > 0", radius))
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(invalid_value("clip-iterations", "an integer ≥ 1", iterations))


def _clip_factor(distance: float, radius: float) -> float:
    """min(1, radius / distance), written so a zero distance never divides."""
    return 1.0 if distance <= radius else radius / distance


def centered_clip(
    updates: Sequence[Update], center: Update, radius: float, iterations: int
) -> list[np.ndarray]:
    """The centered-clipping aggregate of ``updates`` (one list of layer arrays each).

    The norm of ``x_i - v`` is the L2 norm over all of hospital i's layers together.
    Computed in float64; the result has ``center``'s layer shapes.
    """
    _check(radius, iterations)
    if not updates:
        raise ValueError(invalid_value("updates", "at least one update", []))
    shapes = [np.shape(layer) for layer in center]
    for update in updates:
        found = [np.shape(layer) for layer in update]
        if found != shapes:
            raise ValueError(invalid_value("updates", f"layers of shapes {shapes}", found))
    points = [[np.asarray(layer, np.float64) for layer in update] for update in updates]
    v = [np.array(layer, np.float64) for layer in center]
    for _ in range(iterations):
        step = [np.zeros_like(layer) for layer in v]
        for point in points:
            diff = [x - c for x, c in zip(point, v, strict=True)]
            distance = float(np.sqrt(sum(float(np.sum(d * d)) for d in diff)))
            factor = _clip_factor(distance, radius)
            for total, d in zip(step, diff, strict=True):
                total += factor * d
        v = [c + total / len(points) for c, total in zip(v, step, strict=True)]
    return v


class CenteredClipping(FedAvg):
    """FedAvg whose aggregate is the centered clipping of the hospitals' updates.

    Unweighted, as in the paper: every reply counts once whatever its ``num-examples``.
    ``current_arrays`` (the global arrays last sent to train) and ``center`` (the last
    aggregate update, None before round 1) are its state, saved in checkpoints.
    """

    def __init__(self, *, radius: float = 1.0, iterations: int = 1, **options: Any) -> None:
        _check(radius, iterations)
        super().__init__(**options)
        self.radius = radius
        self.iterations = iterations
        self.current_arrays: ArrayRecord | None = None
        self.center: list[np.ndarray] | None = None

    def summary(self) -> None:
        log(INFO, "\t├──> CenteredClipping settings:")
        log(INFO, "\t│\t├── Clip radius (tau): %s", self.radius)
        log(INFO, "\t│\t└── Iterations (L): %s", self.iterations)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        # Always the arrays actually sent: updates are measured from them.
        self.current_arrays = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid_replies, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid_replies:
            return None, None
        if self.current_arrays is None:
            raise AggregationError(
                "No global arrays set for CenteredClipping. "
                "Ensure that `configure_train` has been called before aggregation."
            )
        contents = [msg.content for msg in valid_replies]
        keys = list(self.current_arrays.keys())
        current = self.current_arrays.to_numpy_ndarrays()
        updates: list[list[np.ndarray]] = []
        for content in contents:
            returned = next(iter(content.array_records.values()))
            if set(returned.keys()) != set(keys):
                raise AggregationError(
                    "CenteredClipping needs the global model's array names in every reply."
                )
            updates.append(
                [
                    np.asarray(returned[key].numpy(), np.float64) - np.asarray(base, np.float64)
                    for key, base in zip(keys, current, strict=True)
                ]
            )
        center = self.center
        if center is None:
            center = [np.zeros(np.shape(layer), np.float64) for layer in current]
        aggregate = centered_clip(updates, center, self.radius, self.iterations)
        self.center = aggregate
        arrays = ArrayRecord(
            {
                key: Array(np.asarray(base + step, dtype=base.dtype))
                for key, base, step in zip(keys, current, aggregate, strict=True)
            }
        )
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return arrays, metrics

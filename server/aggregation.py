"""Pure functions that combine the metrics hospitals report."""

from __future__ import annotations

import math

from flwr.app import MetricRecord, RecordDict


def weighted_mean_ignoring_nan(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Examples-weighted mean of every scalar metric, over the replies where it is defined.

    A hospital whose held-out split has one class reports AUC as NaN; it is left out of
    that metric's mean instead of turning the federation's AUC into NaN. A metric no
    hospital could compute stays NaN.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for record in records:
        metrics = next(iter(record.metric_records.values()))
        weight = float(metrics[weight_key])  # type: ignore[arg-type]
        for key, value in metrics.items():
            if key == weight_key or not isinstance(value, int | float):
                continue
            sums.setdefault(key, 0.0)
            weights.setdefault(key, 0.0)
            if math.isfinite(value):
                sums[key] += weight * value
                weights[key] += weight
    return MetricRecord(
        {key: (sums[key] / weights[key] if weights[key] else math.nan) for key in sums}
    )

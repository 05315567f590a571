"""The secure-aggregation benchmark's arithmetic: metrics.json → row, ratios, goals, table.

Pure functions on the run directory's ``metrics.json`` (``rounds[i].seconds``,
``rounds[i]["train-bytes"]``, ``rounds[i].participation``, ``outcome``) and on the
in-process aggregation measurements, so that they can be tested on fabricated files.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from common.text import markdown_table

ROW_KEYS = (
    "hospitals",
    "secagg",
    "seconds_per_round",
    "bytes_per_hospital",
    "max_abs_diff",
    "dropouts",
    "completed",
)
DROPOUT_FRACTION = 0.3
COLLECT_STAGE = "collect_masked_vectors"
SECONDS_GOAL, BYTES_GOAL = 2.0, 1.5
HEADERS = (
    "hospitals",
    "aggregation",
    "s / round (2..N)",
    "KB / hospital / round",
    "max |secure − plain|",
    "dropouts",
    "completed",
)


def dropouts_for(hospitals: int) -> int:
    """30 % of ``hospitals``, halves rounded up (5 → 2, 10 → 3, 20 → 6)."""
    return math.floor(DROPOUT_FRACTION * hospitals + 0.5)


def run_summary(metrics: Mapping[str, Any], rounds_requested: int) -> dict[str, Any]:
    """What one simulation's metrics.json says: per-round seconds, bytes, dropouts."""
    rounds = list(metrics.get("rounds", []))
    seconds = [float(r["seconds"]) for r in rounds]
    steady = seconds[1:] if len(seconds) > 1 else seconds
    per_hospital = [
        (r["train-bytes"]["sent"] + r["train-bytes"]["received"]) / r["train-bytes"]["hospitals"]
        for r in rounds
        if "train-bytes" in r and r["train-bytes"].get("hospitals")
    ]
    dropped = [r["participation"]["failed"] + r["participation"]["timeout"] for r in rounds]
    stages = sorted(
        {
            str(node.get("stage", "unknown"))
            for r in rounds
            for node in r["nodes"]["train"].values()
            if node["status"] in ("failed", "timeout")
        }
    )
    status = metrics.get("outcome", {}).get("status")
    return {
        "seconds_per_round": statistics.fmean(steady) if steady else None,
        "round_seconds": seconds,
        "bytes_per_hospital": round(statistics.fmean(per_hospital)) if per_hospital else None,
        "dropouts": max(dropped, default=0),
        "dropouts_per_round": dropped,
        "dropout_stages": stages,
        "completed": status == "completed" and len(rounds) == rounds_requested,
        "secure_aggregation": [
            r["secure-aggregation"] for r in rounds if "secure-aggregation" in r
        ],
    }


def result_row(
    hospitals: int, secagg: bool, summary: Mapping[str, Any], max_abs_diff: float | None
) -> dict[str, Any]:
    """One row of ``results``: exactly :data:`ROW_KEYS`."""
    return {
        "hospitals": hospitals,
        "secagg": secagg,
        "seconds_per_round": summary["seconds_per_round"],
        "bytes_per_hospital": summary["bytes_per_hospital"],
        "max_abs_diff": max_abs_diff,
        "dropouts": summary["dropouts"],
        "completed": summary["completed"],
    }


def ratio_setting(rows: Sequence[Mapping[str, Any]], preferred: int = 10) -> int | None:
    """The hospital count the ratios are taken at, among ``rows`` without the dropout row:
    ``preferred`` if it has both rows, else the largest count that has (None: none has)."""
    paired = sorted(
        {r["hospitals"] for r in rows if r["secagg"]}
        & {r["hospitals"] for r in rows if not r["secagg"]}
    )
    if preferred in paired:
        return preferred
    return paired[-1] if paired else None


def ratios(rows: Sequence[Mapping[str, Any]], hospitals: int | None) -> dict[str, float | None]:
    """SecAgg+ / plain seconds per round and bytes per hospital at ``hospitals``, among
    ``rows`` without the dropout row (None where a value is missing)."""
    found: dict[str, float | None] = {"ratio_seconds": None, "ratio_bytes": None}
    if hospitals is None:
        return found

    def row(secagg: bool) -> Mapping[str, Any]:
        return next(r for r in rows if r["hospitals"] == hospitals and r["secagg"] is secagg)

    secure, plain = row(True), row(False)
    for key, field in (
        ("ratio_seconds", "seconds_per_round"),
        ("ratio_bytes", "bytes_per_hospital"),
    ):
        if secure[field] is not None and plain[field]:
            found[key] = secure[field] / plain[field]
    return found


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def goals(
    payload: Mapping[str, Any],
    aggregation: Sequence[Mapping[str, Any]],
    dropout_row: Mapping[str, Any] | None,
    dropout_stages: Sequence[str],
) -> list[str]:
    """One line per goal of issue 14, each ending in met or missed. The dropout goal needs
    the round completed with exactly :func:`dropouts_for` hospitals dropped, every one of
    them at ``collect_masked_vectors`` (after sharing keys)."""
    seconds, size = payload["ratio_seconds"], payload["ratio_bytes"]
    at = payload["ratio_hospitals"]
    exact = bool(aggregation) and all(
        m["completed"] and m["max_abs_diff"] <= m["bound"] for m in aggregation
    )
    worst = max((m["max_abs_diff"] or 0.0) / m["bound"] for m in aggregation) if exact else None
    survived = (
        dropout_row is not None
        and dropout_row["completed"]
        and dropout_row["dropouts"] == dropouts_for(dropout_row["hospitals"])
        and list(dropout_stages) == [COLLECT_STAGE]
    )
    lines = [
        f"seconds per round ≤ {SECONDS_GOAL:g}× plain FedAvg at {at} hospitals: "
        + (
            "no pair measured: missed"
            if seconds is None
            else f"{seconds:.2f}×: {_verdict(seconds <= SECONDS_GOAL)}"
        ),
        f"bytes per hospital ≤ {BYTES_GOAL:g}× plain FedAvg at {at} hospitals: "
        + (
            "no pair measured: missed"
            if size is None
            else f"{size:.2f}×: {_verdict(size <= BYTES_GOAL)}"
        ),
        "secure aggregate = plain FedAvg of the same updates within the quantization bound: "
        + (f"largest diff / bound {worst:.2f}: met" if worst is not None else "missed"),
        f"{DROPOUT_FRACTION:.0%} of hospitals dropping after sharing keys survived: "
        + (
            "no dropout row: missed"
            if dropout_row is None
            else f"{dropout_row['dropouts']} of {dropout_row['hospitals']} dropped at "
            f"{', '.join(dropout_stages) or 'no stage'}, every round "
            f"{'completed' if dropout_row['completed'] else 'not completed'}: {_verdict(survived)}"
        ),
    ]
    return lines


def report(rows: Sequence[Mapping[str, Any]]) -> str:
    """The markdown table of ``results``."""

    def number(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    return markdown_table(
        HEADERS,
        [
            [
                r["hospitals"],
                ("SecAgg+" if r["secagg"] else "plain FedAvg")
                + (" (dropouts)" if r["secagg"] and r["dropouts"] else ""),
                number(r["seconds_per_round"], ".2f"),
                number(
                    None if r["bytes_per_hospital"] is None else r["bytes_per_hospital"] / 1e3,
                    ",.0f",
                ),
                number(r["max_abs_diff"], ".2e"),
                r["dropouts"],
                "yes" if r["completed"] else "no",
            ]
            for r in rows
        ],
    )


def exact_dropout_seed(
    start: int, rounds: int, hospitals: int, dropouts: int, limit: int = 100_000
) -> int | None:
    """The first seed from ``start`` with which ``dropout-rate`` :data:`DROPOUT_FRACTION`
    (``straggler-rate`` 0) drops exactly ``dropouts`` of ``hospitals`` in every round
    ``1..rounds`` (:func:`simulations.unreliable.fault_for` is a pure function of the seed);
    None if none of ``limit`` seeds does."""
    from simulations.unreliable import fault_for

    def dropped(seed: int, server_round: int) -> int:
        faults = (fault_for(seed, server_round, p, DROPOUT_FRACTION, 0.0) for p in range(hospitals))
        return sum(fault == "drop" for fault in faults)

    for seed in range(start, start + limit):
        if all(dropped(seed, r) == dropouts for r in range(1, rounds + 1)):
            return seed
    return None

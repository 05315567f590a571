"""A sweep's results: ``results.csv`` (one row per run), ``results.md`` (mean ± std over seeds
per grid cell) and ``plots/*.png`` (a metric by round, one line per cell), written atomically.

A row's metrics are those of the run's last round in its ``metrics.json``; the table
averages the *completed* runs of a cell (its ``runs`` column says how many of its seeds
completed) with the sample standard deviation (n − 1); with one completed seed it shows the
value alone.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.files import atomic_path
from simulations.sweep_file import PlannedRun, Scalar, value_text
from simulations.sweep_runs import COMPLETED, LOG_FILE, METRICS_FILE, RUN_FILE, read_outcome

# (column, phase in a round record, metric): the final round's metrics of every row
FINAL_METRICS = (
    ("evaluate-auc", "evaluate", "auc"),
    ("evaluate-accuracy", "evaluate", "accuracy"),
    ("evaluate-loss", "evaluate", "loss"),
    ("validation-auc", "validation", "auc"),
)
STAT_COLUMNS = (*(column for column, _, _ in FINAL_METRICS), "best-round", "seconds")
# (file, phase, metric): plots of the per-round mean over a cell's seeds
PLOTS = (
    ("auc.png", "evaluate", "auc"),
    ("loss.png", "evaluate", "loss"),
    ("validation-auc.png", "validation", "auc"),
)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def run_rounds(run_dir: Path) -> list[dict[str, Any]]:
    rounds = _read_json(run_dir / METRICS_FILE).get("rounds", [])
    return [r for r in rounds if isinstance(r, dict)] if isinstance(rounds, list) else []


def result_row(run: PlannedRun, run_dir: Path) -> dict[str, Any]:
    """One run's row: its grid values, seed, status and final-round metrics."""
    outcome = read_outcome(run_dir)
    attempt = _read_json(run_dir / RUN_FILE)
    status = outcome.get("status")
    if status not in (COMPLETED, "failed"):
        status = "failed" if attempt.get("exit-code") not in (None, 0) else "incomplete"
    rounds = run_rounds(run_dir)
    last = rounds[-1] if rounds else {}
    row: dict[str, Any] = {key: value for key, value in run.cell}
    row.update({"seed": run.seed, "status": status, "rounds": len(rounds)})
    for column, phase, metric in FINAL_METRICS:
        phase_metrics = last.get(phase)
        row[column] = (
            _number(phase_metrics.get(metric)) if isinstance(phase_metrics, dict) else None
        )
    best = outcome.get("best-round")
    row["best-round"] = best.get("round") if isinstance(best, dict) else None
    row["seconds"] = _number(attempt.get("seconds"))
    message = outcome.get("message") or ""
    if status != COMPLETED and not message:
        message = _last_log_line(run_dir)
    row["message"] = " ".join(str(message).split())
    return row


def _last_log_line(run_dir: Path) -> str:
    try:
        lines = (run_dir / LOG_FILE).read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line.strip()), "")


def csv_text(rows: Sequence[dict[str, Any]], grid_keys: Sequence[str]) -> str:
    columns = [*grid_keys, "seed", "status", "rounds", *STAT_COLUMNS, "message"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                key: value_text(value)
                if isinstance(value, bool)
                else ("" if value is None else value)
                for key, value in row.items()
            }
        )
    return buffer.getvalue()


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``0.912 ± 0.013`` (sample std), the value alone for one, ``—`` for none."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def cells(
    rows: Sequence[dict[str, Any]], grid_keys: Sequence[str]
) -> dict[tuple[Scalar, ...], list[dict[str, Any]]]:
    """Rows grouped by grid cell, in first-seen order."""
    grouped: dict[tuple[Scalar, ...], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(tuple(row[key] for key in grid_keys), []).append(row)
    return grouped


def markdown_table(rows: Sequence[dict[str, Any]], grid_keys: Sequence[str]) -> str:
    """One table: a row per cell, mean ± std over its completed seeds; failures listed below."""
    header = [*(f"`{key}`" for key in grid_keys), "runs", *STAT_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell, members in cells(rows, grid_keys).items():
        done = [row for row in members if row["status"] == COMPLETED]
        stats = [
            mean_std(
                [row[column] for row in done if row[column] is not None],
                digits=1 if column in ("best-round", "seconds") else 3,
            )
            for column in STAT_COLUMNS
        ]
        values = [value_text(value) for value in cell]
        lines.append(
            "| " + " | ".join([*values, f"{len(done)}/{len(members)} completed", *stats]) + " |"
        )
    failed = [row for row in rows if row["status"] != COMPLETED]
    text = "\n".join(lines) + "\n"
    if failed:
        text += "\nRuns that did not complete:\n\n"
        for row in failed:
            where = ",".join(f"{key}={value_text(row[key])}" for key in grid_keys) or "base"
            text += f"- `{where}` seed {row['seed']}: {row['status']}. {row['message']}\n"
    return text


def write_results(
    out: Path, runs: Sequence[PlannedRun], grid_keys: Sequence[str]
) -> list[dict[str, Any]]:
    """Write ``results.csv``, ``results.md`` and the plots under ``out``; return the rows."""
    rows = [result_row(run, out / run.name) for run in runs]
    with atomic_path(out / "results.csv") as tmp:
        tmp.write_text(csv_text(rows, grid_keys), "utf-8")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text("# Sweep results\n\n" + markdown_table(rows, grid_keys), "utf-8")
    write_plots(out, runs)
    return rows


def by_round(
    runs: Sequence[PlannedRun], out: Path, phase: str, metric: str
) -> dict[str, list[tuple[int, float]]]:
    """Per cell name: (round, mean over the cell's runs that have that round's metric)."""
    sums: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        per_round = sums.setdefault(run.cell_name, {})
        for record in run_rounds(out / run.name):
            values = record.get(phase)
            value = _number(values.get(metric)) if isinstance(values, dict) else None
            if value is not None and isinstance(record.get("round"), int):
                per_round.setdefault(record["round"], []).append(value)
    return {
        name: [(r, statistics.mean(v)) for r, v in sorted(per_round.items())]
        for name, per_round in sums.items()
        if per_round
    }


def write_plots(out: Path, runs: Sequence[PlannedRun]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    for file, phase, metric in PLOTS:
        series = by_round(runs, out, phase, metric)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, points in series.items():
            ax.plot([r for r, _ in points], [v for _, v in points], marker="o", label=name)
        ax.set_xlabel("round")
        ax.set_ylabel(f"{phase} {metric} (mean over seeds)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        target = out / "plots" / file
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        written.append(target)
    return written

"""The sweep's results: rows from each run's files, mean ± std per cell, CSV and plots."""

# ruff: noqa: E501  (tables of exact one-line messages and markdown rows)
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from simulations.sweep_file import expand, parse_sweep
from simulations.sweep_results import mean_std, write_results


def write_run(
    run_dir: Path, aucs: list[float], status: str = "completed", seconds: float = 10.0
) -> None:
    """A run directory as the coordinator and the sweep leave it."""
    run_dir.mkdir(parents=True)
    rounds = [
        {
            "round": i + 1,
            "evaluate": {"auc": auc, "accuracy": auc - 0.1, "loss": 1.0 - auc},
            "validation": {"auc": auc + 0.01},
        }
        for i, auc in enumerate(aucs)
    ]
    outcome: dict[str, Any] = {"status": status}
    if status == "completed":
        outcome["best-round"] = {"round": len(aucs), "validation-auc": aucs[-1] + 0.01}
    else:
        outcome["message"] = "Only 1 of the 2 required hospitals\nconnected"
    (run_dir / "metrics.json").write_text(json.dumps({"rounds": rounds, "outcome": outcome}))
    (run_dir / "sweep-run.json").write_text(json.dumps({"exit-code": 0, "seconds": seconds}))


@pytest.fixture
def results(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    sweep = parse_sweep(
        {"hospitals": 2, "seeds": [1, 2, 3], "grid": {"strategy": ["fedavg", "krum"]}}
    )
    runs = expand(sweep)
    finals = {
        "strategy=fedavg/seed=1": ([0.6, 0.80], "completed", 10.0),
        "strategy=fedavg/seed=2": ([0.6, 0.90], "completed", 20.0),
        "strategy=fedavg/seed=3": ([0.6, 0.70], "completed", 30.0),
        "strategy=krum/seed=1": ([0.5, 0.75], "completed", 12.0),
        "strategy=krum/seed=2": ([0.5], "failed", 5.0),
        "strategy=krum/seed=3": ([0.5, 0.65], "completed", 14.0),
    }
    for run in runs:
        aucs, status, seconds = finals[run.name]
        write_run(tmp_path / run.name, aucs, status, seconds)
    return tmp_path, write_results(tmp_path, runs, ["strategy"])


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ([], "—"),
        ([0.5], "0.500"),
        ([0.8, 0.9, 0.7], "0.800 ± 0.100"),
        ([1.0, 2.0], "1.500 ± 0.707"),
    ],
)
def test_mean_std_is_sample_std(values: list[float], text: str) -> None:
    assert mean_std(values) == text


def test_table_is_mean_and_sample_std_over_completed_seeds(results: tuple[Path, Any]) -> None:
    out, _ = results
    # by hand: fedavg AUC 0.8, 0.9, 0.7 -> mean 0.8, sample std sqrt((0.01+0.01+0)/2) = 0.1;
    # krum: the failed seed is left out -> 0.75, 0.65 -> 0.7 ± sqrt(2 * 0.05**2 / 1) = 0.0707
    lines = (out / "results.md").read_text().splitlines()

    assert lines[2:6] == [
        "| `strategy` | runs | evaluate-auc | evaluate-accuracy | evaluate-loss | validation-auc | best-round | seconds |",
        "|---|---|---|---|---|---|---|---|",
        "| fedavg | 3/3 completed | 0.800 ± 0.100 | 0.700 ± 0.100 | 0.200 ± 0.100 | 0.810 ± 0.100 | 2.0 ± 0.0 | 20.0 ± 10.0 |",
        "| krum | 2/3 completed | 0.700 ± 0.071 | 0.600 ± 0.071 | 0.300 ± 0.071 | 0.710 ± 0.071 | 2.0 ± 0.0 | 13.0 ± 1.4 |",
    ]
    assert (
        lines[-1]
        == "- `strategy=krum` seed 2: failed. Only 1 of the 2 required hospitals connected"
    )


def test_csv_has_one_row_per_run_with_final_round_metrics(results: tuple[Path, Any]) -> None:
    out, rows = results

    with (out / "results.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))

    assert len(table) == len(rows) == 6
    assert table[1] == {
        "strategy": "fedavg",
        "seed": "2",
        "status": "completed",
        "rounds": "2",
        "evaluate-auc": "0.9",
        "evaluate-accuracy": str(0.9 - 0.1),
        "evaluate-loss": str(1.0 - 0.9),
        "validation-auc": str(0.9 + 0.01),
        "best-round": "2",
        "seconds": "20.0",
        "message": "",
    }
    assert (table[4]["status"], table[4]["rounds"], table[4]["best-round"]) == ("failed", "1", "")


def test_plots_written(results: tuple[Path, Any]) -> None:
    out, _ = results

    plots = sorted(p.name for p in (out / "plots").iterdir())

    assert plots == ["auc.png", "loss.png", "validation-auc.png"]
    assert all((out / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)

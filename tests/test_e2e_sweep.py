"""A real tiny sweep (2 cells × 1 seed, 2 hospitals, 1 round), then the same sweep again,
which must skip both runs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SWEEP = """
hospitals = 2
seeds = [1]
[base]
model = "cnn-small"
num-server-rounds = 1
synthetic-examples = 150
[grid]
strategy = ["fedavg", "fedmedian"]
"""
RUNS = ["strategy=fedavg/seed=1", "strategy=fedmedian/seed=1"]


def sweep(path: Path, out: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0"}
    command = [
        sys.executable,
        "-m",
        "simulations.sweep",
        str(path),
        "--out",
        str(out),
        "--jobs",
        "1",
    ]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.e2e
def test_sweep_runs_every_cell_then_skips_them(tmp_path: Path) -> None:
    path, out = tmp_path / "sweep.toml", tmp_path / "out"
    path.write_text(SWEEP)

    first = sweep(path, out, timeout=600)
    stamps = {name: (out / name / "metrics.json").stat().st_mtime_ns for name in RUNS}
    second = sweep(path, out, timeout=300)

    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["strategy"], r["seed"], r["status"], r["rounds"]) for r in rows] == [
        ("fedavg", "1", "completed", "1"),
        ("fedmedian", "1", "completed", "1"),
    ]
    assert all(0.0 <= float(r["evaluate-auc"]) <= 1.0 for r in rows)
    for name in RUNS:
        assert any((out / name / "tensorboard").iterdir()), name
    assert (out / "results.md").read_text().count("1/1 completed") == 2
    assert (out / "plots" / "auc.png").is_file()
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "2 runs, 2 already completed, 0 to run" in second.stdout
    assert {name: (out / name / "metrics.json").stat().st_mtime_ns for name in RUNS} == stamps

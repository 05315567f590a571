"""Record-level DP end to end: real simulations (``python -m simulations``) in subprocesses.

One run directory goes through three runs, as a privacy researcher would:

1. ``dp = "record"``, ``dp-epsilon = 3``, 2 rounds: every hospital's ε is in
   ``metrics.json`` each round, grows, and ends at (calibrated: just under) the target;
2. resumed with 3 rounds, a higher run target (6) but a hospital budget ``max-epsilon`` of
   3.1: the hospitals' ledgers (under the run directory) already hold ≈ 3, so every hospital
   refuses round 3 — "privacy budget exhausted" — and trains nothing: the ledgers are
   unchanged, the round-2 checkpoint stays;
3. resumed without the hospital budget: round 3 trains and each hospital's ε continues from
   its round-2 value instead of starting again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
HOSPITALS = 3
BASE = (
    "model='cnn-small' synthetic-examples=150 local-epochs=1 "
    "min-available-nodes=3 min-train-nodes=3 min-evaluate-nodes=3 dp-delta=1e-5 dp-clip-norm=1.0"
)
RECORD = "dp='record' dp-noise-multiplier=0.0"


def simulate(run_dir: Path, settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "simulations",
            "--hospitals",
            str(HOSPITALS),
            "--run-config",
            f"{BASE} run-dir='{run_dir}' {settings}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def hospital_epsilons(record: dict[str, Any]) -> dict[str, float]:
    return {
        node["name"]: node["metrics"]["epsilon"]
        for node in record["nodes"]["train"].values()
        if node["status"] == "ok"
    }


def ledgers(run_dir: Path) -> dict[str, str]:
    folder = run_dir / "privacy-ledgers"
    return {path.name: path.read_text() for path in sorted(folder.glob("*.json"))}


def test_record_level_dp_is_accounted_enforced_and_kept_across_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    first = simulate(run_dir, f"{RECORD} num-server-rounds=2 dp-epsilon=3.0")

    assert first.returncode == 0, first.stderr[-4000:]
    rounds = metrics(run_dir)["rounds"]
    per_round = [hospital_epsilons(record) for record in rounds]
    assert [len(eps) for eps in per_round] == [HOSPITALS, HOSPITALS]
    for name, final in per_round[1].items():
        assert 0 < per_round[0][name] < final <= 3.0
        assert final >= 0.99 * 3.0  # calibrated for a hospital that trains every round
    assert "| ε " in first.stderr + first.stdout
    spent = ledgers(run_dir)
    assert len(spent) == HOSPITALS

    refused = simulate(
        run_dir, f"{RECORD} resume=true num-server-rounds=3 dp-epsilon=6.0 max-epsilon=3.1"
    )

    assert refused.returncode != 0
    outcome = metrics(run_dir)["outcome"]
    assert outcome["status"] == "failed"
    assert "privacy budget exhausted" in outcome["message"]
    assert ledgers(run_dir) == spent  # nobody trained round 3
    assert (run_dir / "checkpoints" / "round-00002.npz").is_file()

    more = simulate(run_dir, f"{RECORD} resume=true num-server-rounds=3 dp-epsilon=6.0")

    assert more.returncode == 0, more.stderr[-4000:]
    final = hospital_epsilons(metrics(run_dir)["rounds"][2])
    assert set(final) == set(per_round[1])
    for name, epsilon in final.items():
        assert per_round[1][name] < epsilon <= 6.0


def test_hospital_level_dp_runs_with_flowers_wrapper_and_clipping_mod(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    done = simulate(
        run_dir, "num-server-rounds=2 dp='hospital' dp-epsilon=50.0 dp-noise-multiplier=0.5"
    )

    assert done.returncode == 0, done.stderr[-4000:]
    rounds = metrics(run_dir)["rounds"]
    spent = [record["privacy"]["epsilon"] for record in rounds]
    assert [record["privacy"]["mode"] for record in rounds] == ["hospital", "hospital"]
    assert 0 < spent[0] < spent[1] <= 50.0
    for record in rounds:  # each update arrived clipped (a larger one would be rejected)
        statuses = {node["status"] for node in record["nodes"]["train"].values()}
        assert statuses == {"ok"}
        assert "epsilon" not in record["train"]

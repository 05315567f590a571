"""A real simulation with a sign-flipping attacker and a hospital that drops out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.attacks import attacker_ids
from simulations.unreliable import fault_for
from tests.conftest import ROOT
from tests.factories import E2E_OVERRIDES

HOSPITALS = 3
SEED = 17  # with dropout-rate 0.3: exactly one hospital drops, in round 1
OVERRIDES = {
    **E2E_OVERRIDES,
    "min-train-nodes": 2,
    "seed": SEED,
    "attack": "sign-flip",
    "attack-fraction": 0.34,
    "dropout-rate": 0.3,
}
SIMULATE = "import json, sys; from simulations.runner import simulate; " + (
    "simulate(json.loads(sys.argv[1]), int(sys.argv[2]))"
)


@pytest.mark.e2e
def test_attackers_and_dropouts_are_recorded(tmp_path: Path) -> None:
    # Prepare
    overrides = {**OVERRIDES, "run-dir": str(tmp_path / "run")}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0"}
    drops = {
        (r, p)
        for r in (1, 2)
        for p in range(HOSPITALS)
        if fault_for(SEED, r, p, 0.3, 0.0) == "drop"
    }

    # Execute
    completed = subprocess.run(
        [sys.executable, "-c", SIMULATE, json.dumps(overrides), str(HOSPITALS)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    # Assert
    assert completed.returncode == 0, completed.stderr[-4000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text("utf-8"))
    assert metrics["outcome"]["status"] == "completed"
    expected = [f"hospital-{i}" for i in attacker_ids(SEED, 0.34, HOSPITALS)]
    assert metrics["outcome"]["attackers"] == expected
    names = {
        node: outcome["name"]
        for record in metrics["rounds"]
        for node, outcome in record["nodes"]["validation"].items()
    }
    failed = {
        (record["round"], names[node])
        for record in metrics["rounds"]
        for node, outcome in record["nodes"]["train"].items()
        if outcome["status"] == "failed" and "simulated dropout" in outcome["reason"]
    }
    assert drops  # the seed was chosen so that a hospital drops
    assert failed == {(r, f"hospital-{p}") for r, p in drops}
    assert [record["participation"]["ok"] for record in metrics["rounds"]] == [
        HOSPITALS - sum(1 for r, _ in drops if r == server_round) for server_round in (1, 2)
    ]

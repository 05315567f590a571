"""Secure aggregation end to end: real simulations (``python -m simulations``, 3 hospitals)
with Flower's SecAgg+ workflow and mod, alone with record-level DP and resumed, and with
hospital-level DP (the same runner and settings as tests/test_e2e_dp.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.secure_aggregation import next_scale
from tests.test_e2e_dp import HOSPITALS, RECORD, hospital_epsilons, metrics, simulate

pytestmark = pytest.mark.e2e
SECURE = "secure-aggregation=true"


def secure_block(record: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = record["secure-aggregation"]
    return block


def test_record_level_dp_with_secure_aggregation_trains_resumes_and_reports(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"

    first = simulate(run_dir, f"{SECURE} {RECORD} num-server-rounds=2 dp-epsilon=3.0")

    assert first.returncode == 0, first.stderr[-4000:]
    rounds = metrics(run_dir)["rounds"]
    for record in rounds:
        block = secure_block(record)
        assert block["contributors"] == HOSPITALS
        assert block["dropouts"] == {"before-masking": 0, "after-masking": 0}
        assert 0.0 < block["range-use-max"] < 0.5  # nothing near saturation
        assert {n["status"] for n in record["nodes"]["train"].values()} == {"ok"}
        assert record["train-bytes"]["hospitals"] == HOSPITALS
    per_round = [hospital_epsilons(record) for record in rounds]
    for name, final in per_round[1].items():
        assert 0 < per_round[0][name] < final <= 3.0
    assert (run_dir / "model.keras").is_file()
    assert (run_dir / "report.md").is_file()

    more = simulate(run_dir, f"{SECURE} {RECORD} resume=true num-server-rounds=3 dp-epsilon=6.0")

    assert more.returncode == 0, more.stderr[-4000:]
    last, resumed = (secure_block(r) for r in metrics(run_dir)["rounds"][1:3])
    expected = next_scale(
        last["scale"], last["range-use-max"] * last["max-weight"] / resumed["max-weight"]
    )
    assert resumed["scale"] == pytest.approx(expected)  # the scale continues from history
    assert resumed["contributors"] == HOSPITALS


def test_hospital_level_dp_clips_before_masking_and_is_accounted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    done = simulate(
        run_dir,
        f"{SECURE} num-server-rounds=2 dp='hospital' dp-epsilon=50.0 dp-noise-multiplier=0.5",
    )

    assert done.returncode == 0, done.stderr[-4000:]
    rounds = metrics(run_dir)["rounds"]
    spent = [record["privacy"]["epsilon"] for record in rounds]
    assert 0 < spent[0] < spent[1] <= 50.0
    for record in rounds:
        block = secure_block(record)
        assert block["max-weight"] == 1.0  # uniform weights, as the accountant assumes
        assert block["contributors"] == HOSPITALS
        # the clip bounds every value: |Δ_j| ≤ dp-clip-norm, so range use ≤ s · 1.0 / clip
        assert block["range-use-max"] <= block["scale"] * 1.0 / block["clipping-range"] + 1e-9

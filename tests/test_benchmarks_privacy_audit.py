"""The privacy-audit benchmark's plumbing (benchmarks/privacy_audit.py), without simulations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.privacy_audit import (
    AUDIT_FILE,
    audited,
    benchmark_rows,
    epsilons,
    label,
    member_half,
    target_overrides,
)


def audit_row(target: str, attack: str, hospital: str, auc: float) -> dict[str, Any]:
    return {
        "epsilon": 2.5,
        "target": target,
        "attack": attack,
        "hospital": hospital,
        "auc": auc,
        "auc_ci": [auc - 0.01, auc + 0.01],
        "tpr_at_0.1%": 0.002,
        "tpr_at_0.1%_ci": [0.0, 0.004],
        "tpr_at_1%": 0.02,
        "tpr_at_1%_ci": [0.01, 0.03],
        "members": 100,
        "non_members": 200,
        "model_auc": 0.9,
        "bound_violations": [],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("none,8,3,1", [None, 8.0, 3.0, 1.0]), ("none", [None]), ("0.5", [0.5])],
)
def test_epsilons_parses_none_and_positive_numbers(text: str, expected: list[float | None]) -> None:
    assert epsilons(text) == expected


@pytest.mark.parametrize("text", ["", "none,0", "-1", "eight", "inf", "nan"])
def test_epsilons_refuses_anything_else_in_one_line(text: str) -> None:
    with pytest.raises(SystemExit) as stop:
        epsilons(text)
    assert str(stop.value) == (
        f"Invalid value for `--epsilons`. Expected 'none' or numbers > 0. Received: '{text}'"
    )


def test_rows_keep_the_overall_global_rows_and_the_update_row() -> None:
    # Prepare
    document = {
        "results": [
            audit_row("global", "loss", "all", 0.55),
            audit_row("global", "loss", "hospital-0", 0.6),
            audit_row("global", "lira", "all", 0.58),
            audit_row("update", "loss", "hospital-3", 0.7),
        ]
    }
    # Execute
    rows = benchmark_rows(document, 3.0)
    # Assert
    assert [(r["target"], r["attack"], r["hospital"]) for r in rows] == [
        ("global", "loss", "all"),
        ("global", "lira", "all"),
        ("update", "loss", "hospital-3"),
    ]
    first = rows[0]
    assert {k: first[k] for k in ("epsilon", "auc", "tpr_at_0.1%", "tpr_at_1%", "model_auc")} == {
        "epsilon": 3.0, "auc": 0.55, "tpr_at_0.1%": 0.002, "tpr_at_1%": 0.02, "model_auc": 0.9,
    }  # fmt: skip
    assert first["epsilon_reached"] == 2.5


def test_a_finished_setting_is_read_back_without_training(tmp_path: Path) -> None:
    # Prepare: the setting's run directory already holds its audit
    document = {"results": [audit_row("global", "loss", "all", 0.5)], "verdict": "pass"}
    run_dir = tmp_path / label(1.0)
    run_dir.mkdir()
    (run_dir / AUDIT_FILE).write_text(json.dumps(document), "utf-8")
    args = argparse.Namespace()  # no federation settings: training would fail
    # Execute
    got = audited(args, tmp_path / "full.npz", tmp_path / "half.npz", 1.0, tmp_path)
    # Assert
    assert got == document


def test_member_half_keeps_a_stratified_half_of_train_and_every_other_split(
    tmp_path: Path,
) -> None:
    # Prepare
    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 60).reshape(-1, 1)
    source = tmp_path / "full.npz"
    np.savez(
        source,
        train_images=rng.integers(0, 255, (100, 4, 4), dtype=np.uint8),
        train_labels=labels,
        val_images=np.zeros((6, 4, 4), np.uint8),
        val_labels=np.zeros((6, 1), np.int64),
    )
    # Execute
    half = member_half(source, tmp_path, seed=1)
    # Assert
    with np.load(half) as data:
        assert np.bincount(data["train_labels"].reshape(-1)).tolist() == [20, 30]
        assert data["val_images"].shape == (6, 4, 4)


@pytest.mark.parametrize(
    ("epsilon", "privacy"),
    [(None, {"dp": "off"}), (3.0, {"dp": "record", "dp-epsilon": 3.0})],
)
def test_target_overrides_choose_the_dp_mode(
    epsilon: float | None, privacy: dict[str, Any]
) -> None:
    # Prepare
    args = argparse.Namespace(
        data="full.npz", hospitals=10, alpha=0.5, rounds=10, local_epochs=3, model="cnn-small",
        seed=1, learning_rate=0.003,
    )  # fmt: skip
    # Execute
    overrides = target_overrides(args, Path("half.npz"), epsilon)
    # Assert
    assert {key: overrides.get(key) for key in privacy} == privacy
    assert overrides["data-path"] == "half.npz"
    assert overrides["min-train-nodes"] == 10
    assert (overrides["seed"], overrides["learning-rate"]) == (1, 0.003)

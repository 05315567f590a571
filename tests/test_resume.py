"""Honest resume, through `federate` against a fake grid (no Ray, no training).

A resume that cannot continue refuses in one line and changes nothing; a resume past
unreadable checkpoints keeps them and the metrics it supersedes; a strategy whose state a
checkpoint could not save stops the run before round 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flwr.serverapp.strategy import FedAdam

from common.config import AppConfig, parse_app_config
from common.errors import RunError
from server import app as server_app
from server.app import federate
from server.checkpoint import checkpoint_path
from tests.factories import coordinator_config, run_config
from tests.fake_grid import FakeGrid, answers

HOSPITALS = 3


def hospitals() -> FakeGrid:
    return FakeGrid(dict.fromkeys(range(1, HOSPITALS + 1), answers(0.01)))


def run_rounds(
    run_dir: Path, rounds: int, resume: bool, keep: int = 3, grid: FakeGrid | None = None
) -> FakeGrid:
    """Federate ``rounds`` rounds in ``run_dir``; return the grid to count its requests."""
    values = coordinator_config(
        run_dir,
        rounds,
        HOSPITALS,
        resume,
        strategy="fedadam",
        checkpoints_keep=keep,
    )
    grid = grid or hospitals()
    federate(grid, parse_app_config(values), values, run_dir.parent)
    return grid


def rounds_in(run_dir: Path) -> list[int]:
    return [r["round"] for r in json.loads((run_dir / "metrics.json").read_text())["rounds"]]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of the run, config.json included (a refused resume must not rewrite it)."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.mark.usefixtures("task_identity")
def test_resume_refuses_when_no_checkpoint_can_be_read(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_rounds(run_dir, rounds=2, resume=False)
    for server_round in (1, 2):
        checkpoint_path(run_dir, server_round).write_bytes(b"")
    before = snapshot(run_dir)
    grid = hospitals()

    with pytest.raises(RunError) as caught:
        run_rounds(run_dir, rounds=3, resume=True, grid=grid)

    assert str(caught.value) == (
        f"Cannot resume the run in {run_dir}: none of its 2 checkpoints can be read "
        "(round-00002.npz: EOFError: No data left in file; "
        "round-00001.npz: EOFError: No data left in file). Nothing was changed; repair or "
        "remove them, or start a new run with another `run-dir`."
    )
    assert "\n" not in str(caught.value)
    assert grid.timeouts == []  # no round started
    assert snapshot(run_dir) == before  # config, metrics, checkpoints, report: byte-identical


@pytest.mark.usefixtures("task_identity")
def test_resume_refuses_when_metrics_list_rounds_but_no_checkpoint_exists(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    run_rounds(run_dir, rounds=2, resume=False)
    for server_round in (1, 2):
        checkpoint_path(run_dir, server_round).unlink()
    before = snapshot(run_dir)

    with pytest.raises(RunError) as caught:
        run_rounds(run_dir, rounds=3, resume=True)

    assert str(caught.value) == (
        f"Cannot resume the run in {run_dir}: its metrics.json lists 2 rounds but "
        "checkpoints/ holds no checkpoint to continue from. Nothing was changed; start a new "
        "run with another `run-dir`."
    )
    assert snapshot(run_dir) == before


@pytest.mark.usefixtures("task_identity")
def test_resume_without_any_history_starts_at_round_one(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    run_rounds(run_dir, rounds=2, resume=True)

    assert rounds_in(run_dir) == [1, 2]


@pytest.mark.usefixtures("task_identity")
def test_resume_past_unreadable_checkpoints_keeps_them_and_the_old_metrics(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    run_rounds(run_dir, rounds=3, resume=False, keep=3)
    checkpoint_path(run_dir, 3).write_bytes(b"broken")
    old_metrics = (run_dir / "metrics.json").read_bytes()

    grid = run_rounds(run_dir, rounds=4, resume=True, keep=1)

    assert rounds_in(run_dir) == [1, 2, 3, 4]  # rounds 3 and 4 ran after round 2's checkpoint
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["num-server-rounds"], config["checkpoints-keep"]) == (4, 1)  # the resumed run's
    assert len(grid.timeouts) == 2 * 3  # train, validation and evaluate of rounds 3 and 4
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.npz")) == ["round-00004.npz"]
    assert (checkpoints / "unreadable" / "round-00003.npz").read_bytes() == b"broken"
    kept = list(run_dir.glob("metrics.before-resume-*.json"))
    assert [p.read_bytes() for p in kept] == [old_metrics]
    outcome = json.loads((run_dir / "metrics.json").read_text())["outcome"]
    assert outcome == {"status": "completed", "best-round": {"round": 1, "validation-auc": 0.5}}


class RenamedMomentFedAdam(FedAdam):
    """FedAdam as if Flower had renamed ``m_t``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        del self.m_t


@pytest.mark.usefixtures("task_identity")
def test_a_strategy_whose_state_cannot_be_saved_stops_the_run_before_round_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def renamed(config: AppConfig) -> FedAdam:
        return RenamedMomentFedAdam()

    monkeypatch.setattr(server_app, "build_strategy", renamed)
    run_dir = tmp_path / "run"
    grid = hospitals()
    values = run_config(model="cnn-small", strategy="fedadam", run_dir=str(run_dir))

    with pytest.raises(RunError, match=r"^Cannot checkpoint RenamedMomentFedAdam: .* `m_t`"):
        federate(grid, parse_app_config(values), values, tmp_path)

    assert grid.timeouts == []  # no hospital was asked anything
    assert json.loads((run_dir / "metrics.json").read_text())["rounds"] == []
    assert not (run_dir / "checkpoints").exists()

"""Model selection on validation: the best round, early stopping, and resume keeping both.

The unit tables drive :class:`server.selection.ModelSelection` directly; the run tests go
through ``federate`` against a fake grid whose hospitals report a chosen validation AUC
per round (no Ray, no training).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from common.config import parse_app_config
from server.app import federate
from server.checkpoint import checkpoint_path, read_checkpoint
from server.selection import ModelSelection, validation_score
from tests.factories import coordinator_config
from tests.fake_grid import FakeGrid, answers, site_of

HOSPITALS = 2
NAN = math.nan


def record(auc: float | None) -> dict[str, Any]:
    """A round record as ``json_metrics`` writes it (NaN becomes None there; kept here too)."""
    return {"validation": {} if auc is None else {"loss": 0.3, "auc": auc}}


@pytest.mark.parametrize(
    ("scores", "best_round"),
    [
        ([0.6, 0.8, 0.7], 2),
        ([0.8, 0.8, 0.7], 1),  # a tie keeps the earlier round
        ([NAN, 0.5], 2),  # NaN is never best
        ([0.5, NAN, 0.4], 1),
        ([None, 0.55, None], 2),  # no hospital validated in rounds 1 and 3
        ([None, None], None),
        ([math.inf, 0.7], 2),  # not a number a model can score
        ([0.0, 0.0], 1),  # a score of 0 is a score
    ],
)
def test_best_round_table(scores: list[float | None], best_round: int | None) -> None:
    selection = ModelSelection()
    arrays = {r: ArrayRecord([np.full(2, r, np.float32)]) for r in range(1, len(scores) + 1)}

    for server_round, score in enumerate(scores, start=1):
        selection.observe(server_round, arrays[server_round], record(score))

    got = None if selection.best is None else selection.best.server_round
    assert got == best_round
    if best_round is not None and selection.best is not None:
        assert selection.best.arrays is arrays[best_round]
        assert selection.best.auc == scores[best_round - 1]


@pytest.mark.parametrize(
    ("value", "score"),
    [(0.75, 0.75), (1, 1.0), (None, None), (True, None), ("0.9", None), (NAN, None)],
)
def test_validation_score(value: object, score: float | None) -> None:
    assert validation_score({"validation": {"auc": value}}) == score


@pytest.mark.parametrize(
    ("scores", "patience", "stops_after"),
    [
        ([0.6, 0.7, 0.65, 0.66, 0.9], 2, 4),  # rounds 3 and 4 brought nothing better than 2
        ([0.6, 0.7, 0.65, 0.66, 0.9], 3, None),  # round 5 is a new best
        ([0.6, 0.7, 0.65, 0.66, 0.9], 0, None),  # 0: early stopping off
        ([0.6, 0.6, 0.6], 1, 2),  # a tie is no improvement
        ([NAN, NAN, NAN], 1, None),  # no validation AUC yet: never stop
        ([NAN, 0.5, NAN], 1, 3),
    ],
)
def test_early_stopping_table(scores: list[float], patience: int, stops_after: int | None) -> None:
    selection = ModelSelection(patience=patience)
    stopped = None

    for server_round, score in enumerate(scores, start=1):
        selection.observe(server_round, ArrayRecord(), record(score))
        if selection.stop_reason(server_round) is not None:
            stopped = server_round
            break

    assert stopped == stops_after


def test_stop_reason_says_why() -> None:
    selection = ModelSelection(patience=2)
    for server_round, score in enumerate([0.6, 0.71234, 0.65, 0.66], start=1):
        selection.observe(server_round, ArrayRecord(), record(score))

    assert selection.stop_reason(4) == (
        "stopped early after round 4: no better validation AUC than round 2's (0.7123) in 2 "
        "rounds (`early-stopping-patience` = 2)"
    )


# -- through federate ---------------------------------------------------------------------
def validating(scores: dict[int, float]) -> Callable[[Message], Message | None]:
    """Trains like ``answers(0.01)``; scores AUC ``scores[round]`` on ``val``, 0.5 on ``test``."""
    trains = answers(0.01)

    def behaviour(request: Message) -> Message | None:
        if request.metadata.message_type == "train":
            return trains(request)
        config = request.content.config_records["config"]
        split, server_round = config["split"], int(str(config["server-round"]))
        auc = scores[server_round] if split == "val" else 0.5
        metrics: dict[str, int | float | list[int] | list[float]] = {
            "num-examples": 5, "loss": 0.2, "accuracy": 0.5, "auc": auc,
            "sensitivity": 0.5, "specificity": 0.5,
        }  # fmt: skip
        content = RecordDict({"metrics": MetricRecord(metrics), "site": site_of(request)})
        return Message(content=content, reply_to=request)

    return behaviour


def federate_rounds(
    run_dir: Path, rounds: int, scores: dict[int, float], resume: bool = False, **settings: Any
) -> None:
    values = coordinator_config(run_dir, rounds, HOSPITALS, resume, strategy="fedavg", **settings)
    grid = FakeGrid(dict.fromkeys(range(1, HOSPITALS + 1), validating(scores)))
    federate(grid, parse_app_config(values), values, run_dir.parent)


def saved_weights(path: Path) -> list[np.ndarray]:
    import keras

    return list(keras.saving.load_model(path).get_weights())


def assert_same(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def metrics_of(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "metrics.json").read_text()))


@pytest.mark.usefixtures("task_identity")
def test_model_is_the_best_round_and_model_last_the_last(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    federate_rounds(run_dir, 3, {1: 0.6, 2: 0.9, 3: 0.7}, checkpoints_keep=3)

    best = read_checkpoint(checkpoint_path(run_dir, 2)).arrays.to_numpy_ndarrays()
    last = read_checkpoint(checkpoint_path(run_dir, 3)).arrays.to_numpy_ndarrays()
    assert_same(saved_weights(run_dir / "model.keras"), best)
    assert_same(saved_weights(run_dir / "model-last.keras"), last)
    metrics = metrics_of(run_dir)
    assert metrics["outcome"] == {
        "status": "completed",
        "best-round": {"round": 2, "validation-auc": 0.9},
    }
    assert [r["validation"]["auc"] for r in metrics["rounds"]] == [0.6, 0.9, 0.7]
    report = (run_dir / "report.md").read_text()
    assert (
        "Final model: `model.keras` = round 2, the best validation AUC (0.9000); "
        "`model-last.keras` = round 3, the last."
    ) in report
    assert "## Best round by validation AUC (`model.keras`)" in report


@pytest.mark.usefixtures("task_identity")
def test_early_stopping_ends_the_run_at_the_right_round(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    scores = {1: 0.6, 2: 0.8, 3: 0.7, 4: 0.75, 5: 0.95, 6: 0.99}

    federate_rounds(run_dir, 6, scores, early_stopping_patience=2)

    metrics = metrics_of(run_dir)
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3, 4]
    assert metrics["outcome"] == {
        "status": "completed",
        "best-round": {"round": 2, "validation-auc": 0.8},
        "stopped-early": "stopped early after round 4: no better validation AUC than round "
        "2's (0.8000) in 2 rounds (`early-stopping-patience` = 2)",
    }
    best = read_checkpoint(checkpoint_path(run_dir, 2)).arrays.to_numpy_ndarrays()
    assert_same(saved_weights(run_dir / "model.keras"), best)


@pytest.mark.usefixtures("task_identity")
def test_resume_keeps_the_best_round_and_its_weights(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    scores = {1: 0.9, 2: 0.5, 3: 0.6, 4: 0.7, 5: 0.8}
    federate_rounds(run_dir, 3, scores, checkpoints_keep=1)
    best_before = saved_weights(run_dir / "model.keras")
    assert not checkpoint_path(run_dir, 1).exists()  # only round 3's checkpoint holds round 1

    federate_rounds(run_dir, 5, scores, resume=True, checkpoints_keep=1)

    assert_same(saved_weights(run_dir / "model.keras"), best_before)
    last = read_checkpoint(checkpoint_path(run_dir, 5)).arrays.to_numpy_ndarrays()
    assert_same(saved_weights(run_dir / "model-last.keras"), last)
    assert metrics_of(run_dir)["outcome"]["best-round"] == {"round": 1, "validation-auc": 0.9}


@pytest.mark.usefixtures("task_identity")
def test_a_run_without_validation_saves_the_last_round_as_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    federate_rounds(run_dir, 2, {1: NAN, 2: NAN})

    last = read_checkpoint(checkpoint_path(run_dir, 2)).arrays.to_numpy_ndarrays()
    assert_same(saved_weights(run_dir / "model.keras"), last)
    assert metrics_of(run_dir)["outcome"] == {"status": "completed", "best-round": None}
    assert (
        "= round 2, the last (no round had a validation AUC)."
        in (run_dir / "report.md").read_text()
    )

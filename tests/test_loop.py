"""The round loop and resume, in-process against a fake grid (no Ray, no training)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Error, Message, RecordDict

from common.config import parse_app_config
from common.errors import ConfigError, RunError
from server.app import build_validating_strategy, federate, run
from server.loop import run_round
from server.records import SiteBook
from server.round_record import round_summary, short_reason
from server.validation import ValidatingStrategy
from tests.factories import app_config, run_config
from tests.fake_grid import FakeGrid, answers


def extra_evaluate_metric(request: Message) -> Message:
    """Trains like everyone but adds a metric nobody declared to its evaluate reply."""
    reply = answers(1.0)(request)
    if request.metadata.message_type == "evaluate":
        reply.content.metric_records["metrics"]["f1"] = 0.3
    return reply


class Dropping:
    """Answers in round 1, then never again (a hospital that went offline)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: Message) -> Message | None:
        self.calls += 1
        return answers(1.0)(request) if self.calls <= 2 else None


def crashes(request: Message) -> Message:
    return Message(
        Error(0, "\x1b[36mray::run\x1b[39m\nTraceback ...\nValueError: bad data"), reply_to=request
    )


def sends_nan(request: Message) -> Message:
    reply = answers(1.0)(request)
    if request.metadata.message_type == "train":
        arrays = reply.content.array_records["arrays"].to_numpy_ndarrays()
        arrays[0][...] = np.nan
        reply.content["arrays"] = ArrayRecord(arrays)
    return reply


def silent(request: Message) -> None:
    return None


def strategy_for(**overrides: Any) -> tuple[ValidatingStrategy, Any]:
    config = app_config(**overrides)
    return build_validating_strategy(config), config


def spends(epsilon: float, offset: float = 1.0, nan: bool = False) -> Any:
    """A hospital under record-level DP: its train reply also carries its cumulative ε."""

    def behaviour(request: Message) -> Message:
        reply = (sends_nan if nan else answers(offset))(request)
        if request.metadata.message_type == "train":
            reply.content.metric_records["metrics"]["epsilon"] = epsilon
        return reply

    return behaviour


def start() -> ArrayRecord:
    return ArrayRecord([np.zeros((2, 2), np.float32), np.ones(3, np.float32)])


@pytest.mark.usefixtures("task_identity")
def test_round_aggregates_the_valid_updates_and_records_every_node() -> None:
    grid = FakeGrid({1: answers(1.0), 2: answers(3.0), 3: crashes, 4: sends_nan, 5: silent})
    strategy, config = strategy_for(min_train_nodes=2, min_available_nodes=5, round_timeout=7.0)

    outcome = run_round(grid, strategy, start(), 1, config)

    got = outcome.arrays.to_numpy_ndarrays()
    np.testing.assert_allclose(got[0], np.full((2, 2), 2.0))  # mean of +1 and +3
    record = outcome.record
    assert record["participation"] == {
        "sampled": 5, "ok": 2, "failed": 1, "timeout": 1, "rejected": 1,
    }  # fmt: skip
    nodes = record["nodes"]["train"]
    assert nodes["3"] == {"name": "node-3", "status": "failed", "reason": "ValueError: bad data"}
    assert nodes["4"] == {
        "name": "site-4", "data-kind": "folder",
        "status": "rejected", "reason": "array `0` contains NaN or Inf",
    }  # fmt: skip
    assert nodes["5"] == {
        "name": "node-5", "status": "timeout", "reason": "no reply within `round-timeout` (7 s)",
    }  # fmt: skip
    assert nodes["1"] == {
        "name": "site-1", "data-kind": "folder", "status": "ok",
        "metrics": {"num-examples": 10, "loss": 0.5, "accuracy": 0.75},
        "update-norm": pytest.approx(math.sqrt(7)),  # 7 weights, each moved by +1
    }  # fmt: skip
    assert nodes["2"]["update-norm"] == pytest.approx(3 * math.sqrt(7))
    assert record["evaluate"]["loss"] == pytest.approx((1.0 + 3.0 + 1.0) / 3)
    assert grid.timeouts == [7.0, 7.0, 7.0]  # train, validation, evaluate


@pytest.mark.usefixtures("task_identity")
def test_a_rejected_evaluate_reply_is_recorded_and_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    grid = FakeGrid({1: answers(1.0), 2: extra_evaluate_metric, 3: answers(4.0)})
    strategy, config = strategy_for(min_train_nodes=2, min_available_nodes=3)

    with caplog.at_level(logging.WARNING):
        record = run_round(grid, strategy, start(), 1, config).record

    assert record["nodes"]["evaluate"]["2"] == {
        "name": "site-2", "data-kind": "folder",
        "status": "rejected", "reason": "record `metrics` keys: unexpected `f1`",
    }  # fmt: skip
    assert record["nodes"]["train"]["2"]["status"] == "ok"
    assert record["evaluate"]["loss"] == pytest.approx((1.0 + 4.0) / 2)
    assert "[fedclinic] evaluate site-2 (node 2) rejected: record `metrics` keys: " in caplog.text


@pytest.mark.usefixtures("task_identity")
def test_a_node_keeps_its_name_after_it_stops_replying() -> None:
    grid = FakeGrid({1: answers(1.0), 2: answers(2.0), 3: Dropping()})
    strategy, config = strategy_for(min_train_nodes=2, min_available_nodes=3)
    book = SiteBook()
    first = run_round(grid, strategy, start(), 1, config, book=book)

    second = run_round(grid, strategy, first.arrays, 2, config, book=book).record

    assert second["nodes"]["train"]["3"] == {
        "name": "site-3", "data-kind": "folder",
        "status": "timeout", "reason": "no reply within `round-timeout` (600 s)",
    }  # fmt: skip
    assert second["nodes"]["evaluate"]["3"]["name"] == "site-3"


@pytest.mark.parametrize(
    ("server_round", "remains"),
    [
        (4, "The checkpoint of round 3 remains."),
        (1, "No round completed, so there is no checkpoint."),
    ],
)
@pytest.mark.usefixtures("task_identity")
def test_too_few_valid_updates_stop_the_run(server_round: int, remains: str) -> None:
    grid = FakeGrid({1: answers(1.0), 2: crashes, 3: sends_nan})
    strategy, config = strategy_for(min_train_nodes=2, min_available_nodes=3)

    with pytest.raises(RunError) as caught:
        run_round(grid, strategy, start(), server_round, config)

    assert str(caught.value) == (
        f"Round {server_round} stopped the run: 1 of 3 hospitals sent a valid update "
        f"(1 failed, 0 timed out, 1 rejected); `min-train-nodes` is 2. Why: node-2 failed: "
        f"ValueError: bad data; site-3 rejected: array `0` contains NaN or Inf. {remains}"
    )


@pytest.mark.usefixtures("task_identity")
def test_record_level_dp_rounds_keep_each_hospitals_epsilon() -> None:
    grid = FakeGrid(
        {1: spends(0.75), 2: spends(1.25, offset=3.0), 3: spends(9.0, nan=True), 4: crashes}
    )
    strategy, config = strategy_for(
        min_train_nodes=2, min_available_nodes=4, dp="record", dp_epsilon=3.0
    )

    record = run_round(grid, strategy, start(), 1, config).record

    assert record["privacy"] == {"mode": "record", "delta": 1e-5, "epsilon": 1.25}
    assert record["train"] == {"loss": 0.5, "accuracy": 0.75}  # no mean of ε
    nodes = record["nodes"]["train"]
    assert [nodes[n]["metrics"]["epsilon"] for n in ("1", "2")] == [0.75, 1.25]
    assert nodes["3"]["status"] == "rejected"  # its ε 9.0 is not the federation's


@pytest.mark.usefixtures("task_identity")
def test_a_run_without_dp_records_no_privacy() -> None:
    grid = FakeGrid({1: answers(1.0), 2: answers(2.0)})
    strategy, config = strategy_for()

    record = run_round(grid, strategy, start(), 1, config).record

    assert "privacy" not in record


SUMMARY_RECORD: dict[str, Any] = {
    "round": 2, "seconds": 1.25,
    "participation": {"sampled": 3, "ok": 2, "failed": 1, "timeout": 0, "rejected": 0},
    "train": {"loss": 0.5, "accuracy": 0.75},
    "evaluate": {"loss": 0.25, "accuracy": 0.5, "auc": 0.625, "sensitivity": 0.5,
                 "specificity": 0.5},
}  # fmt: skip
SUMMARY = (
    "[fedclinic] round 2/5 (1.2 s, 2/3 hospitals trained, 1 failed, 0 timed out, 0 rejected) "
    "| train: loss 0.5000 accuracy 0.7500 | evaluate: loss 0.2500 accuracy 0.5000 auc 0.6250 "
    "sensitivity 0.5000 specificity 0.5000"
)


@pytest.mark.parametrize(
    ("privacy", "expected"),
    [
        (None, SUMMARY),
        ({"mode": "record", "delta": 1e-5, "epsilon": 2.3125}, SUMMARY + " | ε 2.31 (δ 1e-05)"),
        ({"mode": "hospital", "delta": 1e-6, "epsilon": 0.5, "noise_multiplier": 3.0},
         SUMMARY + " | ε 0.50 (δ 1e-06)"),
        ({"mode": "record", "delta": 1e-5, "epsilon": None}, SUMMARY + " | ε n/a (δ 1e-05)"),
    ],
)  # fmt: skip
def test_round_summary_shows_epsilon_when_dp_is_on(
    privacy: dict[str, Any] | None, expected: str
) -> None:
    record = SUMMARY_RECORD if privacy is None else {**SUMMARY_RECORD, "privacy": privacy}

    assert round_summary(record, 5) == expected


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("ValueError: x", "ValueError: x"),
        ("\x1b[36mray::a\x1b[39m\n  trace\nKeyError: 'k'\n\n", "KeyError: 'k'"),
        ("", "no reason given"),
        ("x" * 300, "x" * 199 + "…"),
    ],
)
def test_short_reason(reason: str, expected: str) -> None:
    assert short_reason(reason) == expected


def federate_rounds(tmp_path: Path, rounds: int, resume: bool) -> Path:
    values = run_config(
        model="cnn-small",
        strategy="fedadam",
        num_server_rounds=rounds,
        fraction_train=0.5,
        min_train_nodes=2,
        run_dir=str(tmp_path / "run"),
        resume=resume,
        checkpoints_keep=1,
    )
    grid = FakeGrid({node: answers(0.01 * node) for node in range(1, 5)})
    return federate(grid, parse_app_config(values), values, tmp_path)


@pytest.mark.usefixtures("task_identity")
def test_resume_continues_where_the_run_stopped(tmp_path: Path) -> None:
    straight = federate_rounds(tmp_path / "straight", rounds=3, resume=False)
    federate_rounds(tmp_path / "split", rounds=2, resume=False)

    resumed = federate_rounds(tmp_path / "split", rounds=3, resume=True)

    rounds = json.loads((resumed / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    expected = json.loads((straight / "metrics.json").read_text())["rounds"]
    assert [r["nodes"]["train"].keys() for r in rounds] == [
        r["nodes"]["train"].keys() for r in expected
    ]  # the same hospitals were sampled: the RNG state was restored
    for got, want in zip(
        keras.models.load_model(resumed / "model.keras").get_weights(),
        keras.models.load_model(straight / "model.keras").get_weights(),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.usefixtures("task_identity")
def test_a_finished_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    done = federate_rounds(tmp_path, rounds=1, resume=False)
    before = (done / "metrics.json").read_text()

    with pytest.raises(ConfigError) as caught:
        federate_rounds(tmp_path, rounds=2, resume=False)

    assert str(caught.value) == (
        "Invalid value for `run-dir`. Expected a directory without checkpoints when `resume` "
        f"is false (set `resume=true` to continue that run). Received: {str(done)!r}"
    )
    assert (done / "metrics.json").read_text() == before


def test_a_config_error_fails_the_serverapp_instead_of_exiting() -> None:
    """``sys.exit`` in a simulation's ServerApp thread is swallowed: Flower reports success."""
    context = Context(
        run_id=1,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config=run_config(local_epochs=0),
    )

    with pytest.raises(ConfigError, match="Invalid value for `local-epochs`"):
        run(FakeGrid({}), context)

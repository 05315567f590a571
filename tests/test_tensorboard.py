"""TensorBoard scalars of each round: tags and values, read back from the event files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from server.tensorboard import TENSORBOARD_DIR, RoundScalars, round_scalars


def record(server_round: int) -> dict[str, Any]:
    """A round record shaped like ``server/loop.py::run_round``'s."""
    return {
        "round": server_round,
        "train": {"loss": 0.5 / server_round, "accuracy": 0.7},
        "validation": {"auc": 0.8},
        "evaluate": {"auc": 0.75 + 0.01 * server_round, "loss": 0.4},
        "participation": {"sampled": 3, "ok": 2, "failed": 1},
        "nodes": {
            "train": {
                "11": {
                    "name": "hospital-0",
                    "status": "ok",
                    "metrics": {"num-examples": 90, "loss": 0.25},
                },
                "12": {
                    "name": "St. Mary's/ICU",
                    "status": "ok",
                    "metrics": {"num-examples": 40, "loss": 0.75},
                },
                "13": {"name": "hospital-2", "status": "failed", "reason": "DataError"},
            },
            "evaluate": {
                "11": {
                    "name": "hospital-0",
                    "status": "ok",
                    "metrics": {"num-examples": 20, "auc": 0.9},
                },
            },
        },
        "seconds": 4.5,
    }


def test_round_scalars_tags_and_values() -> None:
    assert round_scalars(record(2)) == [
        ("train/loss", 0.25),
        ("train/accuracy", 0.7),
        ("validation/auc", 0.8),
        ("evaluate/auc", 0.77),
        ("evaluate/loss", 0.4),
        ("participation/sampled", 3.0),
        ("participation/ok", 2.0),
        ("participation/failed", 1.0),
        ("round/seconds", 4.5),
        ("hospitals/hospital-0/train/loss", 0.25),
        ("hospitals/St._Mary_s_ICU/train/loss", 0.75),
        ("hospitals/hospital-0/evaluate/auc", 0.9),
    ]


def read_events(directory: Path) -> dict[tuple[str, int], tuple[float, str]]:
    """(tag, step) -> (value, plugin) from every event file under ``directory``."""
    import tensorflow as tf

    found: dict[tuple[str, int], tuple[float, str]] = {}
    for path in sorted(directory.iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                found[(value.tag, event.step)] = (number, value.metadata.plugin_data.plugin_name)
    return found


def test_events_read_back_with_tags_steps_and_values(tmp_path: Path) -> None:
    scalars = RoundScalars(tmp_path)

    for server_round in (1, 2):
        scalars.write(record(server_round))
    scalars.close()

    events = read_events(tmp_path / TENSORBOARD_DIR)
    expected = {(tag, r): value for r in (1, 2) for tag, value in round_scalars(record(r))}
    assert set(events) == set(expected)
    for key, value in expected.items():
        assert events[key][0] == pytest.approx(value, rel=1e-6)  # stored as float32
        assert events[key][1] == "scalars"
    assert events[("evaluate/auc", 2)][0] == pytest.approx(0.77, rel=1e-6)


def test_a_failure_never_stops_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / TENSORBOARD_DIR).write_text("a file where the directory should be")
    scalars = RoundScalars(tmp_path)

    with caplog.at_level(logging.WARNING, logger="flwr"):
        scalars.write(record(1))
        scalars.write(record(2))

    assert scalars.enabled is False
    warnings = [r.getMessage() for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(warnings) == 1  # warned once, then off
    assert warnings[0].startswith("[fedclinic] TensorBoard scalars not written from round 1 on (")
    assert (tmp_path / TENSORBOARD_DIR).read_text() == "a file where the directory should be"

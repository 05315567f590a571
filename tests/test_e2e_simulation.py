"""A real Flower simulation: 3 hospitals x 2 rounds, through Ray, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import pytest

from client.training import LocalTrainer
from common.models import build_model
from simulations.hospitals import simulated_hospital
from tests.factories import app_config

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES: dict[str, Any] = {
    "num-server-rounds": 2,
    "model": "cnn-small",
    "synthetic-examples": 150,
    "min-available-nodes": 3,
    "min-train-nodes": 3,
    "min-evaluate-nodes": 3,
}
HOSPITALS = 3


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0"}
    completed = subprocess.run(
        [
            sys.executable,
            "tests/e2e_simulation.py",
            str(out),
            str(HOSPITALS),
            json.dumps(OVERRIDES),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return out


def untrained_accuracy() -> float:
    """Accuracy of the initial global model (same seed) on the hospitals' held-out data."""
    config = app_config(**{key.replace("-", "_"): value for key, value in OVERRIDES.items()})
    keras.utils.set_random_seed(config.seed)
    trainer = LocalTrainer(build_model(config.model, config.data.spec()))
    weights = trainer.model.get_weights()
    correct = total = 0.0
    for hospital in range(HOSPITALS):
        test = simulated_hospital(config.data, config.seed, hospital, HOSPITALS).test
        correct += trainer.evaluate(weights, test)["accuracy"] * len(test)
        total += len(test)
    return correct / total


@pytest.mark.e2e
def test_federation_learns(simulation: Path) -> None:
    rounds = json.loads((simulation / "run" / "metrics.json").read_text())["rounds"]

    assert [r["round"] for r in rounds] == [1, 2]
    assert all(len(r["nodes"]["train"]) == HOSPITALS for r in rounds)
    assert rounds[-1]["evaluate"]["accuracy"] > untrained_accuracy() + 0.1
    assert keras.models.load_model(simulation / "run" / "model.keras").output_shape == (None, 2)


@pytest.mark.e2e
def test_run_directory_holds_resolved_config(simulation: Path) -> None:
    config = json.loads((simulation / "run" / "config.json").read_text())

    assert config["num-server-rounds"] == 2
    assert config["model"] == "cnn-small"


@pytest.mark.e2e
def test_every_reply_is_weights_and_scalar_metrics(simulation: Path) -> None:
    lines = (simulation / "replies.jsonl").read_text().splitlines()
    replies = [json.loads(line) for line in lines]

    assert len(replies) == 2 * HOSPITALS * 2  # train + evaluate, every hospital, every round
    for reply in replies:
        assert "error" not in reply, reply
        assert reply["configs"] == []
        assert list(reply["metrics"]) == ["metrics"]
        assert set(reply["metrics"]["metrics"].values()) <= {"int", "float"}
        if reply["type"] == "train":
            assert reply["arrays"] == reply["sent_arrays"]
        else:
            assert reply["arrays"] == {}
    shapes = [tuple(shape) for shape, _ in replies[0]["sent_arrays"]["arrays"]]
    assert shapes == [w.shape for w in build_model("cnn-small", app_config().data.spec()).weights]

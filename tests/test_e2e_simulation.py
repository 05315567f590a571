"""A real Flower simulation: 3 hospitals x 2 rounds, through Ray, in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import pytest

from client.training import LocalTrainer
from common.models import build_model
from simulations.hospitals import simulated_hospital
from tests.factories import E2E_HOSPITALS, E2E_OVERRIDES, app_config

pytestmark = pytest.mark.e2e  # every test here runs real simulations
OVERRIDES = E2E_OVERRIDES
HOSPITALS = E2E_HOSPITALS
Simulation = tuple[Path, dict[str, Any]]


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
def test_federation_learns(simulation: Simulation) -> None:
    out, _ = simulation
    rounds = json.loads((out / "run" / "metrics.json").read_text())["rounds"]

    assert [r["round"] for r in rounds] == [1, 2]
    assert all(len(r["nodes"]["train"]) == HOSPITALS for r in rounds)
    assert rounds[-1]["evaluate"]["accuracy"] > untrained_accuracy() + 0.1
    assert keras.models.load_model(out / "run" / "model.keras").output_shape == (None, 2)


@pytest.mark.e2e
def test_run_directory_holds_resolved_config(simulation: Simulation) -> None:
    config = json.loads((simulation[0] / "run" / "config.json").read_text())

    assert config["num-server-rounds"] == 2
    assert config["model"] == "cnn-small"


@pytest.mark.e2e
def test_every_reply_is_exactly_the_contract(simulation: Simulation) -> None:
    lines = (simulation[0] / "replies.jsonl").read_text().splitlines()
    replies = [json.loads(line) for line in lines]

    # train, validation and test evaluate: every hospital, every round
    assert len(replies) == 3 * HOSPITALS * 2
    for reply in replies:
        assert "error" not in reply, reply
        assert reply["violations"] == [], reply
        metrics = reply["metrics"]["metrics"]
        assert set(reply["configs"]) == {"site"}
        assert set(metrics.values()) <= {"int", "float"}
        if reply["type"] == "train":
            assert set(metrics) == {"num-examples", "loss", "accuracy"}
            assert reply["arrays"] == reply["sent_arrays"]
        else:
            expected = {"num-examples", "loss", "accuracy", "auc", "sensitivity", "specificity"}
            assert set(metrics) == expected
            assert reply["arrays"] == {}
    shapes = [tuple(shape) for shape, _ in replies[0]["sent_arrays"]["arrays"]]
    assert shapes == [w.shape for w in build_model("cnn-small", app_config().data.spec()).weights]


@pytest.mark.e2e
def test_each_node_reports_one_simulated_hospital_name(simulation: Simulation) -> None:
    lines = (simulation[0] / "replies.jsonl").read_text().splitlines()
    sites = {
        (r["node"], r["configs"]["site"]["site-name"], r["configs"]["site"]["data-kind"])
        for r in map(json.loads, lines)
    }

    names = sorted(name for _, name, _ in sites)
    assert names == [f"hospital-{n}" for n in range(HOSPITALS)]  # one name per node
    assert len({node for node, _, _ in sites}) == HOSPITALS
    assert {kind for _, _, kind in sites} == {"simulated-synthetic"}

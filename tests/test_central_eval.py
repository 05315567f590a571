"""Central evaluation: metrics against an independent calculation; loading the set."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from server.central_eval import central_metrics, load_central_split
from tests.factories import app_config


def test_matches_a_loop_over_examples() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0])
    probabilities = np.array(
        [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9], [0.8, 0.2]]
    )
    matrix = [[0, 0], [0, 0]]
    loss = 0.0
    for label, probs in zip(labels, probabilities, strict=True):
        matrix[label][int(probs[1] > probs[0])] += 1
        loss -= math.log(probs[label])

    metrics = central_metrics(labels, probabilities)

    assert metrics["confusion-matrix"] == matrix == [[2, 1], [1, 2]]
    assert metrics["loss"] == pytest.approx(loss / 6)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["sensitivity"] == pytest.approx(2 / 3)  # recall of class 1
    assert metrics["specificity"] == pytest.approx(2 / 3)
    # AUC: of the 9 (positive, negative) pairs, the positive scores higher in 8
    assert metrics["auc"] == pytest.approx(8 / 9)
    assert metrics["num-examples"] == 6


def test_undefined_metrics_are_null_for_json() -> None:
    metrics = central_metrics(np.array([1, 1]), np.array([[0.4, 0.6], [0.3, 0.7]]))

    assert metrics["auc"] is None
    assert metrics["specificity"] is None


def test_empty_path_means_off() -> None:
    assert load_central_split(app_config()) is None


def test_missing_path_is_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.npz")

    with pytest.raises(ConfigError) as caught:
        load_central_split(app_config(central_eval_path=missing))

    assert str(caught.value) == (
        "Invalid value for `central-eval-path`. Expected an existing .npz file or image "
        f"folder. Received: {missing!r}"
    )


def test_reads_the_test_split_of_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "central.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        train_images=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        train_labels=np.arange(12) % 2,
        test_images=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        test_labels=(np.arange(6) % 2).reshape(-1, 1),
    )

    split = load_central_split(app_config(central_eval_path=str(path)))

    assert split is not None
    assert split.images.shape == (6, 28, 28, 1)
    assert split.labels.tolist() == [0, 1, 0, 1, 0, 1]

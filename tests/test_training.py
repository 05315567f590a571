from __future__ import annotations

import keras
import numpy as np
import pytest

from client.cache import ProcessCache
from client.training import LocalTrainer
from common.config import TrainConfig
from common.data.schema import Split
from common.models import build_model
from tests.factories import data_spec, random_images


def tiny_split(n: int = 64, seed: int = 0) -> Split:
    """Images whose class is whether the top half is brighter: learnable in a few steps."""
    images = random_images(n, seed=seed) * 0.5
    labels = np.arange(n) % 2
    images[labels == 1, :14] += 0.5
    return Split(images=images, labels=labels.astype(np.int64))


def train_config(**overrides: float) -> TrainConfig:
    values = {"local_epochs": 2, "batch_size": 16, "learning_rate": 0.01, "proximal_mu": 0.0}
    return TrainConfig.model_validate({**values, **overrides})


@pytest.fixture(scope="module")
def trainer() -> LocalTrainer:
    keras.utils.set_random_seed(0)
    return LocalTrainer(build_model("cnn-small", data_spec()))


@pytest.mark.parametrize("name", ["cnn", "cnn-small"])
@pytest.mark.parametrize(("classes", "channels"), [(2, 1), (3, 3)])
def test_models_are_shaped_by_the_data(name: str, classes: int, channels: int) -> None:
    model = build_model(name, data_spec(classes=classes, channels=channels))

    assert model.input_shape == (None, 28, 28, channels)
    assert model.output_shape == (None, classes)


def test_training_does_not_retrace_across_rounds(trainer: LocalTrainer) -> None:
    data = tiny_split()
    weights = trainer.model.get_weights()
    trainer.fit(weights, data, train_config(), seed=1)
    traces_after_first_round = trainer.traces

    for round_seed in range(2, 5):
        trainer.fit(weights, data.take(np.arange(40)), train_config(batch_size=7), seed=round_seed)

    assert trainer.traces == traces_after_first_round


def test_fit_learns_and_reports_counts(trainer: LocalTrainer) -> None:
    data = tiny_split(128)
    start = trainer.model.get_weights()
    before = trainer.evaluate(start, data)

    result = trainer.fit(start, data, train_config(local_epochs=5), seed=0)
    after = trainer.evaluate(result.weights, data)

    assert result.num_examples == 128
    assert after["loss"] < before["loss"]
    assert after["accuracy"] > 0.9


def distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True))))


def test_proximal_term_keeps_weights_near_global(trainer: LocalTrainer) -> None:
    data = tiny_split(64)
    start = trainer.model.get_weights()

    free = trainer.fit(start, data, train_config(), seed=0).weights
    held = trainer.fit(start, data, train_config(proximal_mu=50.0), seed=0).weights

    assert distance(held, start) < 0.5 * distance(free, start)


def test_rounds_start_from_fresh_optimizer_state(trainer: LocalTrainer) -> None:
    data = tiny_split(32)
    start = trainer.model.get_weights()

    first = trainer.fit(start, data, train_config(), seed=3).weights
    second = trainer.fit(start, data, train_config(), seed=3).weights

    assert distance(first, second) < 1e-4


def test_cache_builds_one_trainer_per_architecture() -> None:
    cache = ProcessCache()

    a = cache.trainer("cnn-small", data_spec())
    b = cache.trainer("cnn-small", data_spec())
    c = cache.trainer("cnn-small", data_spec(classes=3))

    assert a is b
    assert a is not c

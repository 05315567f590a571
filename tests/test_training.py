from __future__ import annotations

import keras
import numpy as np
import pytest

from client.cache import ProcessCache
from client.training import LocalTrainer
from common.config import TrainConfig
from common.data.schema import Split
from common.data.synthetic import synthetic_site
from common.models import build_model
from common.seeding import derive_seed
from tests.factories import app_config, data_spec, random_images


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


@pytest.fixture
def start() -> list[np.ndarray]:
    """The untrained weights: each test starts from them, not from the previous test's fit."""
    keras.utils.set_random_seed(0)
    return build_model("cnn-small", data_spec()).get_weights()


@pytest.mark.parametrize("name", ["cnn", "cnn-small"])
@pytest.mark.parametrize(("classes", "channels"), [(2, 1), (3, 3)])
def test_models_are_shaped_by_the_data(name: str, classes: int, channels: int) -> None:
    model = build_model(name, data_spec(classes=classes, channels=channels))

    assert model.input_shape == (None, 28, 28, channels)
    assert model.output_shape == (None, classes)


@pytest.mark.parametrize(("name", "gain"), [("cnn", 2.0), ("cnn-small", 1.0)])
def test_relu_layers_start_from_their_initializers(name: str, gain: float) -> None:
    """`cnn`: He-normal (Glorot's smaller weights shrink the signal at every ReLU layer, see
    the next test); `cnn-small`: Keras's Glorot-uniform default (common/models.py says why)."""
    keras.utils.set_random_seed(0)
    model = build_model(name, data_spec())

    relu = [
        layer
        for layer in model.layers
        if getattr(layer, "activation", None) is keras.activations.relu
    ]
    assert len(relu) == {"cnn": 7, "cnn-small": 1}[name]
    for layer in relu:
        kernel = layer.kernel.numpy()
        fan_in = int(np.prod(kernel.shape[:-1]))
        fan_out = int(np.prod(kernel.shape[:-2])) * kernel.shape[-1]
        # He-normal sd: sqrt(2 / fan_in); Glorot-uniform sd: sqrt(2 / (fan_in + fan_out)).
        expected = np.sqrt(gain * 2 / (fan_in * gain + fan_out * (2 - gain)))
        # the sample sd of n values has a relative standard error of about 1/sqrt(2n)
        assert kernel.std() == pytest.approx(expected, rel=4 / np.sqrt(2 * kernel.size))


def federated_round_auc(seed: int, hospitals: int = 5) -> float:
    """The demo's first round in-process: each hospital trains the seeded initial `cnn` with
    the default settings, FedAvg weights by examples, evaluate AUC weighted as the server."""
    config = app_config(seed=seed)
    spec = config.data.spec()
    sites = [
        synthetic_site(seed, h, config.data.synthetic_examples, spec) for h in range(hospitals)
    ]
    keras.utils.set_random_seed(seed)
    start = build_model("cnn", spec).get_weights()
    local = LocalTrainer(build_model("cnn", spec))
    fits = [
        local.fit(start, site.train, config.train, seed=derive_seed(seed, site.name, 1))
        for site in sites
    ]
    counts = [fit.num_examples for fit in fits]
    averaged = [
        np.average([fit.weights[i] for fit in fits], axis=0, weights=counts)
        for i in range(len(start))
    ]
    aucs = [local.evaluate(averaged, site.test)["auc"] for site in sites]
    return float(np.average(aucs, weights=[len(site.test) for site in sites]))


def test_first_federated_round_learns_the_synthetic_task() -> None:
    """With Glorot initial weights the untrained `cnn` gives every image nearly the same
    output, and after the first FedAvg round of seed 3 its AUC was 0.2: positives ranked
    below normals. An AUC below 0.6 on ~400 held-out images is far outside chance."""
    assert federated_round_auc(seed=3) > 0.6


def test_training_does_not_retrace_across_rounds(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    data = tiny_split()
    weights = start
    trainer.fit(weights, data, train_config(), seed=1)
    traces_after_first_round = trainer.traces

    for round_seed in range(2, 5):
        trainer.fit(weights, data.take(np.arange(40)), train_config(batch_size=7), seed=round_seed)

    assert trainer.traces == traces_after_first_round


def test_fit_learns_and_reports_counts(trainer: LocalTrainer, start: list[np.ndarray]) -> None:
    data = tiny_split(128)
    before = trainer.evaluate(start, data)

    result = trainer.fit(start, data, train_config(local_epochs=5), seed=0)
    after = trainer.evaluate(result.weights, data)

    assert result.num_examples == 128
    assert after["loss"] < before["loss"]
    assert after["accuracy"] > 0.9


def distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True))))


def test_proximal_term_keeps_weights_near_global(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    data = tiny_split(64)

    free = trainer.fit(start, data, train_config(), seed=0).weights
    held = trainer.fit(start, data, train_config(proximal_mu=50.0), seed=0).weights

    assert distance(held, start) < 0.5 * distance(free, start)


def test_rounds_start_from_fresh_optimizer_state(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    data = tiny_split(32)

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

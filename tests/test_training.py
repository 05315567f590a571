from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from client.cache import ProcessCache
from client.dp_sgd import RecordDP
from client.optimizers import LocalOptimizers
from client.privacy import plan_round
from client.training import LocalTrainer, batches
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


def train_config(**overrides: float | str | bool) -> TrainConfig:
    """The declared defaults with small-test values and ``overrides`` (Python names)."""
    values = {
        **app_config().train.model_dump(),
        "local_epochs": 2,
        "batch_size": 16,
        "learning_rate": 0.01,
        "proximal_mu": 0.0,
    }
    return TrainConfig.model_validate({**values, **overrides})


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


# -- local steps ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "batch_size", "local_epochs", "local_steps", "expected"),
    [
        (15, 16, 2, 0, 2),  # epochs: 1 batch each
        (100, 16, 3, 0, 21),  # epochs: ⌈100 / 16⌉ = 7 batches each
        (15, 16, 2, 10, 10),  # steps: a small hospital goes round its data 10 times
        (100, 16, 3, 5, 5),  # steps: a large one stops within its first epoch
        (40, 16, 1, 7, 7),  # steps: 2 epochs of 3 batches, then one more
    ],
)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_round_is_local_steps_optimizer_steps_or_the_epochs(
    trainer: LocalTrainer,
    start: list[np.ndarray],
    n: int,
    batch_size: int,
    local_epochs: int,
    local_steps: int,
    expected: int,
    optimizer: str,
) -> None:
    config = train_config(
        batch_size=batch_size,
        local_epochs=local_epochs,
        local_steps=local_steps,
        local_optimizer=optimizer,
    )

    trainer.fit(start, tiny_split(n), config, seed=0)

    assert trainer.optimizers.active is trainer.optimizers.by_kind[optimizer]
    assert int(trainer.optimizers.active.iterations.numpy()) == expected


@pytest.mark.parametrize(
    ("n", "batch_size", "steps", "sizes"),
    [
        (10, 4, 7, [4, 4, 2, 4, 4, 2, 4]),
        (10, 4, 2, [4, 4]),
        (3, 8, 4, [3, 3, 3, 3]),
    ],
)
def test_batches_continue_through_reshuffled_epochs(
    n: int, batch_size: int, steps: int, sizes: list[int]
) -> None:
    drawn = list(batches(seed=1, num_examples=n, batch_size=batch_size, steps=steps))

    assert [b.size for b in drawn] == sizes
    flat = np.concatenate(drawn)
    for epoch_start in range(0, flat.size - n + 1, n):  # every complete epoch: a permutation
        np.testing.assert_array_equal(np.sort(flat[epoch_start : epoch_start + n]), np.arange(n))
    rng = np.random.default_rng(1)  # the oracle: numpy's permutations of the same seed
    expected = np.concatenate([rng.permutation(n) for _ in range(math.ceil(flat.size / n))])
    np.testing.assert_array_equal(flat, expected[: flat.size])


def test_local_steps_of_whole_epochs_train_exactly_as_the_epochs(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    data = tiny_split(40)  # 3 batches of 16, 16, 8 per epoch

    by_epochs = trainer.fit(start, data, train_config(local_epochs=2), seed=4)
    by_steps = trainer.fit(start, data, train_config(local_epochs=1, local_steps=6), seed=4)

    assert distance(by_epochs.weights, by_steps.weights) < 1e-6
    assert by_steps.loss == pytest.approx(by_epochs.loss, rel=1e-6)
    assert by_steps.accuracy == by_epochs.accuracy


@pytest.mark.parametrize(
    ("n", "local_epochs", "local_steps", "expected_steps"),
    [(64, 2, 0, 8), (64, 2, 25, 25), (10, 3, 0, 3), (10, 3, 40, 40)],
)
def test_record_dp_rounds_are_local_steps_dp_sgd_steps(
    trainer: LocalTrainer,
    start: list[np.ndarray],
    n: int,
    local_epochs: int,
    local_steps: int,
    expected_steps: int,
) -> None:
    """plan_round: ``local-steps`` DP-SGD steps (else ⌈N / batch⌉ × epochs), calibrated for
    steps × rounds releases; the trainer takes exactly that many optimizer steps (noise-only
    steps of empty samples included)."""
    config = app_config(
        dp="record", num_server_rounds=4, batch_size=16,
        local_epochs=local_epochs, local_steps=local_steps,
    )  # fmt: skip
    calls: list[tuple[float, float, int, float | None]] = []

    def calibrate(epsilon: float, delta: float, releases: int, rate: float | None) -> float:
        calls.append((epsilon, delta, releases, rate))
        return 1.0

    plan = plan_round(config, config.train, n, calibrate)
    assert plan.dp is not None
    dp = RecordDP(plan.dp.clip_norm, plan.dp.noise_multiplier, plan.dp.steps, seed=3)
    batch_config = config.train.model_copy(update={"batch_size": plan.batch_size})
    trainer.fit(start, tiny_split(n), batch_config, seed=0, dp=dp)

    assert plan.dp.steps == expected_steps
    assert calls == [(3.0, 1e-5, expected_steps * 4, min(16, n) / n)]
    assert int(trainer.optimizers.active.iterations.numpy()) == expected_steps


# -- local optimizers -------------------------------------------------------------------
@pytest.mark.parametrize(("learning_rate", "momentum"), [(0.1, 0.0), (0.1, 0.9), (0.05, 0.5)])
def test_sgd_with_momentum_matches_its_formula(learning_rate: float, momentum: float) -> None:
    """Two steps with gradients g1, g2: v1 = -lr g1, w1 = w0 + v1; v2 = μ v1 - lr g2,
    w2 = w1 + v2 (Keras's SGD, with μ a variable)."""
    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    g1, g2 = np.array([0.3, -1.0, 2.0], np.float32), np.array([-0.5, 0.2, 1.0], np.float32)
    variable = tf.Variable(w0)
    optimizers = LocalOptimizers([variable])
    optimizers.reset("sgd", learning_rate, momentum)
    apply = tf.function(lambda g: optimizers.apply([g], [variable]))

    apply(tf.constant(g1))
    apply(tf.constant(g2))

    v1 = -learning_rate * g1
    v2 = momentum * v1 - learning_rate * g2
    np.testing.assert_allclose(variable.numpy(), w0 + v1 + v2, rtol=1e-6)


def test_adam_choice_matches_a_fresh_keras_adam() -> None:
    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    grads = [np.array([0.3, -1.0, 2.0], np.float32), np.array([-0.5, 0.2, 1.0], np.float32)]
    ours, reference = tf.Variable(w0), tf.Variable(w0)
    optimizers = LocalOptimizers([ours])
    optimizers.reset("sgd", 0.1, 0.9)
    optimizers.reset("adam", 0.1, 0.9)  # the choice of the round is the last reset's
    adam = keras.optimizers.Adam(learning_rate=0.1)
    apply = tf.function(lambda g: optimizers.apply([g], [ours]))

    for g in grads:
        apply(tf.constant(g))
        adam.apply_gradients([(tf.constant(g), reference)])

    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_every_optimizer_learns_and_starts_each_round_fresh(
    trainer: LocalTrainer, start: list[np.ndarray], optimizer: str
) -> None:
    data = tiny_split(128)
    config = train_config(local_epochs=5, local_optimizer=optimizer, local_momentum=0.9)

    first = trainer.fit(start, data, config, seed=3)
    second = trainer.fit(start, data, config, seed=3)

    assert trainer.evaluate(first.weights, data)["accuracy"] > 0.9
    assert distance(first.weights, second.weights) < 1e-4


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_proximal_term_applies_with_every_optimizer(
    trainer: LocalTrainer, start: list[np.ndarray], optimizer: str
) -> None:
    data = tiny_split(64)

    free = trainer.fit(start, data, train_config(local_optimizer=optimizer), seed=0).weights
    held = trainer.fit(
        start, data, train_config(local_optimizer=optimizer, proximal_mu=50.0), seed=0
    ).weights

    assert distance(held, start) < 0.5 * distance(free, start)


def test_switching_optimizers_and_augmentation_never_retraces(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    data = tiny_split(32)
    trainer.fit(start, data, train_config(), seed=1)
    trainer.fit(start, data, train_config(), seed=1, dp=RecordDP(1.0, 1.0, steps=2, seed=1))
    traces_after_first_rounds = trainer.traces
    rounds = [
        {"local_optimizer": "sgd", "local_momentum": 0.5, "learning_rate": 0.05},
        {"local_optimizer": "adam", "augment": True, "augment_shift": 0.2},
        {"local_optimizer": "sgd", "local_momentum": 0.0, "augment": True, "local_steps": 3},
        {"augment": True, "augment_rotation": 30.0, "augment_contrast": 0.5},
    ]

    for number, overrides in enumerate(rounds):
        trainer.fit(start, data, train_config(**overrides), seed=number)
        dp = RecordDP(1.0, 1.0, steps=2, seed=number)
        trainer.fit(start, data, train_config(**overrides), seed=number, dp=dp)

    assert trainer.traces == traces_after_first_rounds


@pytest.mark.parametrize("use_dp", [False, True])
def test_fit_reports_plain_python_numbers(
    trainer: LocalTrainer, start: list[np.ndarray], use_dp: bool
) -> None:
    """Metrics travel as Python int/float (tests/test_e2e_simulation.py checks the wire)."""
    from client.dp_sgd import RecordDP

    dp = RecordDP(clip_norm=1.0, noise_multiplier=1.0, steps=2, seed=3) if use_dp else None

    result = trainer.fit(start, tiny_split(32), train_config(local_epochs=1), seed=0, dp=dp)

    assert (type(result.num_examples), type(result.loss), type(result.accuracy)) == (
        int,
        float,
        float,
    )

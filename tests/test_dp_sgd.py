"""Record-level DP-SGD (client/dp_sgd.py and LocalTrainer.fit with `dp`), on `cnn-small`."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from client.dp_sgd import (
    RecordDP,
    clip_per_example,
    clipped_sum,
    noisy_mean,
    per_example_gradients,
    poisson_sample,
    round_randomness,
)
from client.training import LocalTrainer
from common.errors import ConfigError
from common.models import BUILDERS, build_model
from tests.factories import data_spec
from tests.test_training import distance, tiny_split, train_config


def oracle_gradients(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[B, P]``: each example's flattened gradient, one plain GradientTape per example."""
    loss = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    rows = []
    for image, label in zip(images, labels, strict=True):
        with tf.GradientTape() as tape:
            example_loss = loss(label[None], model(image[None], training=True))
        grads = tape.gradient(example_loss, model.trainable_variables)
        rows.append(np.concatenate([g.numpy().ravel() for g in grads]))
    return np.stack(rows)


def flat(per_example: list[tf.Tensor]) -> np.ndarray:
    count = int(per_example[0].shape[0])
    return np.concatenate([g.numpy().reshape(count, -1) for g in per_example], axis=1)


def total_norm(weights: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(w.astype(np.float64) ** 2) for w in weights)))


def conv_variants() -> keras.Model:
    """Convolutions `cnn` and `cnn-small` do not have: strided, dilated, 'same' and
    'valid' padding, several input channels (client/pfor_conv.py must match them all)."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(5, 3, dilation_rate=2, padding="valid", activation="relu")(x)
    x = keras.layers.Conv2D(3, (2, 3), strides=(1, 2), padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


MODELS = {"cnn-small": lambda: build_model("cnn-small", data_spec()), "conv": conv_variants}


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("clip_relative_to_median", [0.2, 10.0])
def test_clipping_bounds_each_example_and_matches_one_at_a_time_oracle(
    model_name: str, clip_relative_to_median: float
) -> None:
    keras.utils.set_random_seed(0)
    model = MODELS[model_name]()
    loss = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    data = tiny_split(12, seed=1)
    oracle = oracle_gradients(model, data.images, data.labels)
    norms = np.linalg.norm(oracle.astype(np.float64), axis=1)
    clip = float(np.median(norms)) * clip_relative_to_median
    expected = oracle * np.minimum(1.0, clip / norms)[:, None]  # numpy clipping

    grads, _, _ = tf.function(per_example_gradients)(
        model, loss, tf.constant(data.images), tf.constant(data.labels)
    )
    clipped = flat(clip_per_example(grads, clip))
    summed = np.concatenate([s.numpy().ravel() for s in clipped_sum(grads, clip)])

    np.testing.assert_allclose(flat(grads), oracle, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(clipped, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(summed, expected.sum(axis=0), rtol=1e-4, atol=1e-5)
    assert np.all(np.linalg.norm(clipped, axis=1) <= clip * (1 + 1e-5))
    # the table's two rows are a clipping and a non-clipping case
    assert np.any(norms > clip) == (clip_relative_to_median < 1)


@pytest.mark.parametrize(
    ("noise_multiplier", "clip_norm", "expected_batch"), [(1.0, 1.0, 16.0), (0.7, 3.0, 5.0)]
)
def test_noise_of_an_empty_sum_has_the_calibrated_std(
    trainer: LocalTrainer, noise_multiplier: float, clip_norm: float, expected_batch: float
) -> None:
    zeros = [tf.zeros_like(v) for v in trainer.model.trainable_variables]
    generator = tf.random.Generator.from_seed(123)

    noise = noisy_mean(zeros, noise_multiplier, clip_norm, expected_batch, generator)
    values = np.concatenate([n.numpy().ravel() for n in noise]).astype(np.float64)

    n = values.size
    sd = noise_multiplier * clip_norm / expected_batch
    assert n > 40_000  # every parameter of cnn-small: a tight tolerance
    # the sample sd of n normal values has standard error sd/sqrt(2n); the mean, sd/sqrt(n)
    assert values.std() == pytest.approx(sd, abs=6 * sd / np.sqrt(2 * n))
    assert abs(values.mean()) < 6 * sd / np.sqrt(n)


def test_dp_rounds_never_retrace(trainer: LocalTrainer, start: list[np.ndarray]) -> None:
    data = tiny_split(64)
    trainer.fit(start, data, train_config(), seed=1)  # a plain round
    trainer.fit(start, data, train_config(), seed=1, dp=RecordDP(1.0, 1.0, steps=4, seed=1))
    traces_after_first_rounds = trainer.traces

    trainer.fit(
        start, data.take(np.arange(40)), train_config(batch_size=7), seed=2,
        dp=RecordDP(clip_norm=0.3, noise_multiplier=2.5, steps=6, seed=2),
    )  # fmt: skip
    trainer.fit(start, data, train_config(batch_size=3), seed=3)  # a plain round in between
    trainer.fit(
        start, tiny_split(2), train_config(batch_size=1), seed=4,
        dp=RecordDP(clip_norm=5.0, noise_multiplier=0.5, steps=8, seed=4),
    )  # fmt: skip

    assert trainer.traces == traces_after_first_rounds


@pytest.mark.parametrize(("seed", "same"), [(None, False), (17, True)])
def test_noise_and_sampling_come_from_os_entropy_unless_seeded(
    trainer: LocalTrainer, start: list[np.ndarray], seed: int | None, same: bool
) -> None:
    data = tiny_split(32)
    dp = RecordDP(clip_norm=1.0, noise_multiplier=1.0, steps=4, seed=seed)

    first = trainer.fit(start, data, train_config(), seed=5, dp=dp).weights
    second = trainer.fit(start, data, train_config(), seed=5, dp=dp).weights

    assert (distance(first, second) < 1e-5) == same
    assert distance(first, start) > 1e-3  # trained at all


def test_round_randomness_ignores_nothing_but_its_own_seed() -> None:
    sampler_a, state_a = round_randomness(None)
    sampler_b, state_b = round_randomness(None)
    sampler_c, state_c = round_randomness(8)
    sampler_d, state_d = round_randomness(8)

    assert not np.array_equal(state_a, state_b)
    assert sampler_a.random() != sampler_b.random()
    np.testing.assert_array_equal(state_c, state_d)
    assert sampler_c.random() == sampler_d.random()


def test_poisson_sample_draws_each_example_with_the_rate() -> None:
    rng = np.random.default_rng(0)
    rate, num_examples, draws = 0.3, 50, 400

    counts = np.zeros(num_examples)
    sizes = []
    for _ in range(draws):
        sample = poisson_sample(rng, num_examples, rate)
        counts[sample] += 1
        sizes.append(sample.size)

    # each example's count is Binomial(draws, rate): 6 standard deviations
    assert np.all(np.abs(counts - draws * rate) < 6 * np.sqrt(draws * rate * (1 - rate)))
    assert len(set(sizes)) > 1  # sizes vary


def test_dp_sgd_learns_the_tiny_task(trainer: LocalTrainer, start: list[np.ndarray]) -> None:
    data = tiny_split(128)
    before = trainer.evaluate(start, data)
    dp = RecordDP(clip_norm=1.0, noise_multiplier=0.3, steps=40, seed=3)

    result = trainer.fit(start, data, train_config(local_epochs=5), seed=0, dp=dp)
    after = trainer.evaluate(result.weights, data)

    assert after["loss"] < 0.8 * before["loss"]
    assert after["accuracy"] > 0.8
    assert result.num_examples == 128
    assert result.accuracy > 0.5  # over the last epoch-equivalent's draws, while learning
    assert 0.0 <= result.loss < before["loss"]


def test_proximal_term_pulls_dp_weights_toward_the_anchor(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    data = tiny_split(64)
    dp = RecordDP(clip_norm=1.0, noise_multiplier=0.3, steps=8, seed=9)

    free = trainer.fit(start, data, train_config(), seed=0, dp=dp).weights
    held = trainer.fit(start, data, train_config(proximal_mu=50.0), seed=0, dp=dp).weights

    assert distance(held, start) < 0.5 * distance(free, start)


def test_empty_poisson_samples_are_noise_only_steps(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    data = tiny_split(2)
    dp = RecordDP(clip_norm=1.0, noise_multiplier=1.0, steps=12, seed=5)
    sampler, _ = round_randomness(dp.seed)  # the fit's own sampler (same seed): the oracle
    sizes = [poisson_sample(sampler, 2, 0.5).size for _ in range(dp.steps)]

    result = trainer.fit(start, data, train_config(batch_size=1), seed=0, dp=dp)

    assert 0 in sizes  # this seed draws empty samples
    assert all(np.all(np.isfinite(w)) for w in result.weights)
    assert distance(result.weights, start) > 1e-3
    assert result.num_examples == 2


def test_a_round_of_one_empty_sample_is_one_noise_step(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    """Adam's first step moves each weight by lr · g / (|g| + 3e-6) ≈ ±lr for noise g of
    std 1; the round drew no example, so its loss is that of the final weights on the data."""
    data = tiny_split(2)
    seed = next(s for s in range(100) if poisson_sample(round_randomness(s)[0], 2, 0.5).size == 0)
    dp = RecordDP(clip_norm=1.0, noise_multiplier=1.0, steps=1, seed=seed)

    result = trainer.fit(start, data, train_config(batch_size=1, learning_rate=0.01), 0, dp=dp)

    moved = np.concatenate(
        [np.abs(w - s).ravel() for w, s in zip(result.weights, start, strict=True)]
    )
    assert np.median(moved) == pytest.approx(0.01, rel=1e-3)
    assert moved.max() <= 0.01 * (1 + 1e-4)
    scores = trainer.evaluate(result.weights, data)
    assert (result.loss, result.accuracy) == (scores["loss"], scores["accuracy"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"clip_norm": 0.0},
            "Invalid value for `dp-clip-norm`. Expected a number > 0. Received: 0.0",
        ),
        (
            {"noise_multiplier": 0.0},
            "Invalid value for `dp-noise-multiplier`. Expected a number > 0 when training "
            "(0 in the run config means: calibrate first). Received: 0.0",
        ),
        ({"steps": 0}, "Invalid value for `steps`. Expected an integer ≥ 1. Received: 0"),
    ],
)
def test_record_dp_refuses_settings_without_privacy(fields: dict[str, float], message: str) -> None:
    values = {"clip_norm": 1.0, "noise_multiplier": 1.0, "steps": 1, **fields}

    with pytest.raises(ConfigError) as error:
        RecordDP(**values)  # type: ignore[arg-type]

    assert str(error.value) == message


def test_batch_larger_than_the_data_is_refused(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    with pytest.raises(ConfigError, match="Invalid value for `batch-size`"):
        trainer.fit(
            start, tiny_split(4), train_config(batch_size=5), seed=0, dp=RecordDP(1.0, 1.0, 1)
        )


def batch_norm_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def test_batch_norm_detector_finds_batch_norm() -> None:
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.BatchNormalization()(inputs))

    assert len(batch_norm_layers(keras.Model(inputs, outputs))) == 1


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_model_is_dp_compatible(name: str) -> None:
    """Batch norm mixes the examples of a batch: per-example gradients would not be."""
    assert batch_norm_layers(build_model(name, data_spec())) == []

"""Augmentation of training batches (client/augment.py) and where LocalTrainer uses it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from client.augment import Augmenter, draw_parameters, round_state, transform
from client.dp_sgd import RecordDP
from client.training import LocalTrainer
from tests.factories import random_images
from tests.test_training import distance, tiny_split, train_config

ON = {
    "augment": True,
    "augment_shift": 0.1,
    "augment_rotation": 10.0,
    "augment_intensity": 0.1,
    "augment_contrast": 0.1,
}


def augmented(augmenter: Augmenter, images: np.ndarray) -> np.ndarray:
    return tf.function(augmenter)(tf.constant(images)).numpy()


def parameters(rows: list[list[float]]) -> tf.Tensor:
    """Rows of (shift x, shift y, radians, brightness, contrast factor)."""
    return tf.constant(rows, tf.float32)


def test_with_augment_off_the_batch_is_unchanged() -> None:
    images = random_images(8, seed=1)
    augmenter = Augmenter()
    augmenter.configure(train_config(**{**ON, "augment": False}), round_state(0))

    np.testing.assert_array_equal(augmented(augmenter, images), images)


def test_with_augment_on_every_image_changes_and_stays_in_range() -> None:
    images = random_images(8, seed=1)
    augmenter = Augmenter()
    augmenter.configure(train_config(**ON), round_state(0))

    first = augmented(augmenter, images)
    second = augmenter(tf.constant(images)).numpy()  # the generator moved on

    assert first.shape == images.shape
    assert first.min() >= 0.0
    assert first.max() <= 1.0
    assert np.all(np.abs(first - images).max(axis=(1, 2, 3)) > 1e-3)  # each image changed
    assert np.abs(first - second).max() > 1e-3


@pytest.mark.parametrize("seed", [0, 7])
def test_the_same_round_state_draws_the_same_augmentation(seed: int) -> None:
    images = random_images(4, seed=2)
    augmenter = Augmenter()

    augmenter.configure(train_config(**ON), round_state(seed))
    first = augmented(augmenter, images)
    augmenter.configure(train_config(**ON), round_state(seed))
    second = augmented(augmenter, images)

    np.testing.assert_array_equal(first, second)


def test_round_state_without_a_seed_comes_from_os_entropy() -> None:
    assert not np.array_equal(round_state(None), round_state(None))
    np.testing.assert_array_equal(round_state(3), round_state(3))


@pytest.mark.parametrize(
    ("shift", "rotation", "intensity", "contrast"),
    [(0.1, 10.0, 0.1, 0.1), (0.25, 0.0, 0.0, 0.5), (0.0, 90.0, 0.3, 0.0)],
)
def test_drawn_parameters_stay_within_their_magnitudes(
    shift: float, rotation: float, intensity: float, contrast: float
) -> None:
    generator = tf.random.Generator.from_seed(5)

    drawn = draw_parameters(
        generator,
        tf.constant(2000),
        *(tf.constant(v) for v in (shift, rotation, intensity, contrast)),
    ).numpy()

    # uniform on [-m, m]: the extremes of 2,000 draws are within 1% of m
    bounds = [shift, shift, np.deg2rad(rotation), intensity, contrast]
    centres = [0.0, 0.0, 0.0, 0.0, 1.0]
    for column, (bound, centre) in enumerate(zip(bounds, centres, strict=True)):
        spread = np.abs(drawn[:, column] - centre)
        assert spread.max() <= bound * (1 + 1e-6)
        assert spread.max() >= bound * 0.99


@pytest.mark.parametrize(("dx", "dy"), [(2, 0), (0, -3), (-1, 4), (3, 3)])
def test_a_whole_pixel_shift_matches_numpy(dx: int, dy: int) -> None:
    """Content moves by (dx, dy) pixels; what comes in mirrors the border (numpy's
    'symmetric' padding)."""
    images = random_images(2, size=12, seed=3)
    size = images.shape[1]
    pad = 4
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    expected = padded[:, pad - dy : pad - dy + size, pad - dx : pad - dx + size]

    moved = transform(tf.constant(images), parameters([[dx / size, dy / size, 0, 0, 1]] * 2))

    np.testing.assert_allclose(moved.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(("degrees", "turns"), [(90.0, -1), (-90.0, 1), (180.0, 2)])
def test_a_quarter_turn_matches_numpy_rot90(degrees: float, turns: int) -> None:
    images = random_images(2, size=9, seed=4)

    turned = transform(tf.constant(images), parameters([[0, 0, np.deg2rad(degrees), 0, 1]] * 2))

    np.testing.assert_allclose(turned.numpy(), np.rot90(images, turns, axes=(1, 2)), atol=1e-5)


@pytest.mark.parametrize(("brightness", "factor"), [(0.2, 1.0), (0.0, 0.6), (-0.1, 1.4)])
def test_intensity_and_contrast_are_about_each_image_mean_and_clipped(
    brightness: float, factor: float
) -> None:
    images = random_images(3, size=8, seed=5)
    mean = images.mean(axis=(1, 2), keepdims=True)
    expected = np.clip((images - mean) * factor + mean + brightness, 0.0, 1.0)

    changed = transform(tf.constant(images), parameters([[0, 0, 0, brightness, factor]] * 3))

    np.testing.assert_allclose(changed.numpy(), expected, atol=1e-6)


def test_prediction_and_evaluation_never_augment(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    data = tiny_split(32)
    trained = trainer.fit(start, data, train_config(**ON), seed=0).weights  # augment is on now

    predicted = trainer.predict(data.images)
    scores = trainer.evaluate(trained, data)

    np.testing.assert_allclose(
        predicted, trainer.model(data.images, training=False).numpy(), rtol=1e-5, atol=1e-6
    )
    assert scores == trainer.evaluate(trained, data)


@pytest.mark.parametrize("use_dp", [False, True])
def test_augmentation_changes_training(
    trainer: LocalTrainer, start: list[np.ndarray], use_dp: bool
) -> None:
    data = tiny_split(32)
    dp = RecordDP(1.0, 1.0, steps=4, seed=2) if use_dp else None

    plain = trainer.fit(start, data, train_config(), seed=1, dp=dp).weights
    again = trainer.fit(start, data, train_config(), seed=1, dp=dp).weights
    augmented_fit = trainer.fit(start, data, train_config(**ON), seed=1, dp=dp).weights

    assert distance(plain, again) < 1e-5
    assert distance(plain, augmented_fit) > 1e-3


def test_under_dp_augmentation_does_not_come_from_the_run_seed(
    trainer: LocalTrainer, start: list[np.ndarray]
) -> None:
    data = tiny_split(32)
    dp = RecordDP(1.0, 1.0, steps=4, seed=6)  # fixes sampling, noise and augmentation

    first = trainer.fit(start, data, train_config(**ON), seed=1, dp=dp).weights
    other_seed = trainer.fit(start, data, train_config(**ON), seed=2, dp=dp).weights
    plain_first = trainer.fit(start, data, train_config(**ON), seed=1).weights
    plain_other = trainer.fit(start, data, train_config(**ON), seed=2).weights

    assert distance(first, other_seed) < 1e-5
    assert distance(plain_first, plain_other) > 1e-3


def test_changing_magnitudes_never_retraces(trainer: LocalTrainer, start: list[np.ndarray]) -> None:
    data = tiny_split(16)
    trainer.fit(start, data, train_config(**ON), seed=0)
    traces = trainer.traces

    for scale in (0.0, 0.5, 2.0):
        magnitudes = {
            "augment_shift": 0.1 * scale,
            "augment_rotation": 10.0 * scale,
            "augment_intensity": 0.1 * scale,
            "augment_contrast": 0.1 * scale,
        }
        trainer.fit(start, data, train_config(**{**ON, **magnitudes}), seed=0)

    assert trainer.traces == traces

"""Random augmentation of medical images inside the traced training step.

Each image of a training batch gets its own random shift (up to ``augment-shift`` of its
width and height), rotation about its centre (up to ``augment-rotation`` degrees), contrast
change about its own mean (factor in 1 ± ``augment-contrast``) and brightness change (up to
± ``augment-intensity``), then is clipped to [0, 1]. No flips: left and right are anatomy
(the heart, situs), not symmetry. Pixels moved in from outside the image mirror the border
(``REFLECT``), interpolation is bilinear, so a whole-pixel shift moves pixels exactly.

The switch and the magnitudes are variables and the random numbers come from a
``tf.random.Generator`` whose state is reset each round, so changing any of them never
retraces. Randomness (:func:`round_state`): without DP from the round's seed (reproducible
runs); under record-level DP from OS entropy (or the test-only ``RecordDP.seed``), like
DP-SGD's sampling and noise, never from the run seed the coordinator knows.

Only the training steps call :class:`Augmenter` (plain and DP, before the per-example
gradients); evaluation and prediction see the images as they are.
"""

from __future__ import annotations

import math
import secrets

import numpy as np
import tensorflow as tf

from common.config import TrainConfig

ENTROPY_BITS = 128
PHILOX_STATE_WORDS = 3  # a tf.random.Generator's Philox state, as int64 words
STREAM = 0xA06  # keeps augmentation's stream apart from others seeded by the same number


def round_state(seed: int | None) -> np.ndarray:
    """The augmentation generator's Philox state for one round: from ``seed``, or from 128
    bits of OS entropy when None."""
    entropy = secrets.randbits(ENTROPY_BITS) if seed is None else seed
    sequence = np.random.SeedSequence([entropy, STREAM])
    return sequence.generate_state(PHILOX_STATE_WORDS, np.uint64).view(np.int64)


def draw_parameters(
    generator: tf.random.Generator,
    batch: tf.Tensor,
    shift: tf.Tensor,
    rotation: tf.Tensor,
    intensity: tf.Tensor,
    contrast: tf.Tensor,
) -> tf.Tensor:
    """``[batch, 5]``: per image the shift along x and y (fractions of the image size), the
    rotation (radians), the additive brightness and the contrast factor, each uniform in
    its symmetric range."""
    unit = generator.uniform((batch, 5), minval=-1.0, maxval=1.0, dtype=tf.float32)
    scale = tf.stack([shift, shift, rotation * math.pi / 180.0, intensity, contrast])
    return unit * scale + tf.constant([0.0, 0.0, 0.0, 0.0, 1.0])


def transform(images: tf.Tensor, parameters: tf.Tensor) -> tf.Tensor:
    """``images`` ``[B, H, W, C]`` moved by ``parameters`` (:func:`draw_parameters`'s layout),
    their contrast and brightness changed, clipped to [0, 1].

    The projective transform maps each output pixel back to its input position: for a
    shift ``t`` (pixels) and a rotation ``θ`` about the centre ``c``,
    ``in = R(-θ)(out - c - t) + c``.
    """
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    tx, ty = parameters[:, 0] * width, parameters[:, 1] * height
    cos, sin = tf.cos(parameters[:, 2]), tf.sin(parameters[:, 2])
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    zero = tf.zeros_like(cos)
    matrices = tf.stack(
        [
            cos,
            sin,
            cx - cos * (cx + tx) - sin * (cy + ty),
            -sin,
            cos,
            cy + sin * (cx + tx) - cos * (cy + ty),
            zero,
            zero,
        ],
        axis=1,
    )
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=matrices,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    moved = tf.ensure_shape(moved, images.shape)  # the op forgets the static height and width
    mean = tf.reduce_mean(moved, axis=(1, 2), keepdims=True)
    factor = tf.reshape(parameters[:, 4], (-1, 1, 1, 1))
    brightness = tf.reshape(parameters[:, 3], (-1, 1, 1, 1))
    return tf.clip_by_value((moved - mean) * factor + mean + brightness, 0.0, 1.0)


class Augmenter:
    """The per-round switch, magnitudes and generator; call it on a batch in a traced step."""

    def __init__(self) -> None:
        self.enabled = tf.Variable(False, trainable=False)
        self.shift = tf.Variable(0.0, trainable=False)
        self.rotation = tf.Variable(0.0, trainable=False)
        self.intensity = tf.Variable(0.0, trainable=False)
        self.contrast = tf.Variable(0.0, trainable=False)
        self.generator = tf.random.Generator.from_seed(0)  # reset every round

    def configure(self, config: TrainConfig, state: np.ndarray) -> None:
        """Set one round's settings and the generator's state (:func:`round_state`)."""
        self.enabled.assign(config.augment)
        self.shift.assign(config.augment_shift)
        self.rotation.assign(config.augment_rotation)
        self.intensity.assign(config.augment_intensity)
        self.contrast.assign(config.augment_contrast)
        self.generator.reset(state)

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """The batch augmented when enabled, else the very same values."""

        def augmented() -> tf.Tensor:
            parameters = draw_parameters(
                self.generator,
                tf.shape(images)[0],
                self.shift,
                self.rotation,
                self.intensity,
                self.contrast,
            )
            return transform(images, parameters)

        return tf.cond(self.enabled, augmented, lambda: tf.identity(images))

"""Record-level DP-SGD: Poisson sampling, per-example gradients, clipping and Gaussian noise.

One DP-SGD step (Abadi et al. 2016, with Poisson sampling as ``dp-accounting`` assumes):
every training example joins the step's sample independently with probability
``q = batch-size / N``; each sampled example's gradient of its own data loss is clipped to
L2 norm ≤ ``C`` over all trainable variables together; the clipped gradients are summed,
Gaussian noise of std ``sigma · C`` is added to the sum, and the result is divided by the
*expected* batch size ``q · N`` (never by the drawn size, which would depend on the data).
An empty sample is still a step: its update is the noise alone.

Randomness: the run's ``seed`` is known to the coordinator, so nothing here derives from
it — a coordinator that could regenerate the noise could subtract it. In production
(:attr:`RecordDP.seed` is None) the sampler and the noise are seeded from 128 bits of OS
entropy (:mod:`secrets`); a fixed ``seed`` is for tests only.

The TensorFlow pieces are pure functions of their inputs (used inside
``client.training.LocalTrainer``'s traced DP step); TensorFlow is imported when they are
first called, so importing :class:`RecordDP` costs nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from client.pfor_conv import fast_conv_filter_gradients
from common.errors import ConfigError, invalid_value

if TYPE_CHECKING:
    import tensorflow as tf

ENTROPY_BITS = 128
# A tf.random.Generator's Philox state: a 128-bit counter and a 64-bit key, as 3 int64.
PHILOX_STATE_WORDS = 3


@dataclass(frozen=True)
class RecordDP:
    """One round of record-level DP-SGD at a hospital."""

    clip_norm: float  # per-example gradient L2 norm bound C (`dp-clip-norm`)
    noise_multiplier: float  # sigma: noise std = sigma * C on the SUM of clipped gradients
    steps: int  # DP-SGD steps this round (common.privacy.local_steps)
    seed: int | None = None  # None in production: sampling and noise from OS entropy

    def __post_init__(self) -> None:
        if not (isinstance(self.clip_norm, int | float) and self.clip_norm > 0):
            raise ConfigError(invalid_value("dp-clip-norm", "a number > 0", self.clip_norm))
        if not (isinstance(self.noise_multiplier, int | float) and self.noise_multiplier > 0):
            raise ConfigError(
                invalid_value(
                    "dp-noise-multiplier",
                    "a number > 0 when training (0 in the run config means: calibrate first)",
                    self.noise_multiplier,
                )
            )
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(invalid_value("steps", "an integer ≥ 1", self.steps))


def round_randomness(seed: int | None) -> tuple[np.random.Generator, np.ndarray]:
    """The Poisson sampler and the noise generator's Philox state for one round.

    Both come from one ``SeedSequence`` whose entropy is ``seed`` (tests) or, when None,
    128 fresh bits from the OS: independent of the run seed the coordinator knows.
    """
    entropy = secrets.randbits(ENTROPY_BITS) if seed is None else seed
    sampling, noise = np.random.SeedSequence(entropy).spawn(2)
    state = noise.generate_state(PHILOX_STATE_WORDS, np.uint64).view(np.int64)
    return np.random.default_rng(sampling), state


def poisson_sample(rng: np.random.Generator, num_examples: int, rate: float) -> np.ndarray:
    """Indices of a Poisson sample: each example independently with probability ``rate``."""
    return np.flatnonzero(rng.random(num_examples) < rate)


def per_example_gradients(
    model: Any,
    loss: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    images: tf.Tensor,
    labels: tf.Tensor,
) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
    """Each example's gradient of its own data loss, its loss and its probabilities.

    ``tf.vectorized_map`` runs one GradientTape per example (a batch of one), vectorised
    into batched ops; the forward pass inside it is the only one, so losses and
    probabilities come with the gradients. Gradients are ``[B, *variable.shape]`` in
    ``model.trainable_variables`` order; convolution-filter gradients are vectorised by
    client/pfor_conv.py. Needs at least one example: TF's fallback loop for
    per-example convolution-filter gradients cannot stack zero elements (an empty Poisson
    sample is a noise-only step, see ``LocalTrainer``). Dropout, if the model has any,
    draws one mask per step, shared by the step's examples (the map traces the model once).
    """
    import tensorflow as tf

    variables = model.trainable_variables

    def one(example: tuple[tf.Tensor, tf.Tensor]) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
        image, label = example
        with tf.GradientTape() as tape:
            probabilities = model(image[None], training=True)
            example_loss = loss(label[None], probabilities)
        return tape.gradient(example_loss, variables), example_loss, probabilities[0]

    with fast_conv_filter_gradients():
        return tf.vectorized_map(one, (images, labels))


def per_example_norms(grads: Sequence[tf.Tensor]) -> tf.Tensor:
    """``[B]``: each example's gradient L2 norm over all variables together."""
    import tensorflow as tf

    squares = [tf.reduce_sum(tf.reshape(tf.square(g), (tf.shape(g)[0], -1)), axis=1) for g in grads]
    return tf.sqrt(tf.add_n(squares))


def clip_factors(grads: Sequence[tf.Tensor], clip_norm: tf.Tensor | float) -> tf.Tensor:
    """``[B]``: ``C / max(norm, C)``, the factor that brings each example's gradient (all
    variables together) to L2 norm ≤ ``C``; 1 inside the ball, never a division by zero."""
    import tensorflow as tf

    norms = per_example_norms(grads)
    clip = tf.cast(clip_norm, norms.dtype)
    return clip / tf.maximum(norms, clip)


def clip_per_example(grads: Sequence[tf.Tensor], clip_norm: tf.Tensor | float) -> list[tf.Tensor]:
    """Each example's gradient scaled to L2 norm ≤ ``clip_norm`` (``[B, *shape]`` each)."""
    import tensorflow as tf

    factors = clip_factors(grads, clip_norm)
    return [g * tf.reshape(factors, (-1,) + (1,) * (len(g.shape) - 1)) for g in grads]


def clipped_sum(grads: Sequence[tf.Tensor], clip_norm: tf.Tensor | float) -> list[tf.Tensor]:
    """The sum over examples of :func:`clip_per_example`, without materialising the clipped
    copies: one ``factors · grads`` contraction per variable."""
    import tensorflow as tf

    factors = clip_factors(grads, clip_norm)
    return [tf.tensordot(factors, g, axes=[[0], [0]]) for g in grads]


def noisy_mean(
    summed: Sequence[tf.Tensor],
    noise_multiplier: tf.Tensor | float,
    clip_norm: tf.Tensor | float,
    expected_batch: tf.Tensor | float,
    generator: tf.random.Generator,
) -> list[tf.Tensor]:
    """(sum of clipped gradients + N(0, (sigma · C)²) per coordinate) / expected batch size.

    ``summed`` is :func:`clipped_sum`'s output (zeros for an empty sample), one tensor per
    variable; the noise is drawn from ``generator``, whose state the caller seeds.
    """
    import tensorflow as tf

    std = tf.cast(noise_multiplier, tf.float32) * tf.cast(clip_norm, tf.float32)
    divisor = tf.cast(expected_batch, tf.float32)
    return [(s + generator.normal(s.shape, stddev=std, dtype=s.dtype)) / divisor for s in summed]

"""Local training and evaluation of one Keras model, built and traced once per process.

A :class:`LocalTrainer` owns the model, its local optimizers (Adam and SGD with momentum,
client/optimizers.py), the augmentation of training batches (client/augment.py) and two
``tf.function`` graphs (one train step, one forward pass) with fixed input signatures, so a
hospital running many rounds — or a simulation process serving many hospitals — never
rebuilds, recompiles or retraces. Everything that changes per round (global weights, the
optimizer, its learning rate and momentum, FedProx's mu and its anchor weights, optimizer
state, augmentation magnitudes and randomness) lives in variables that are assigned, not
re-created.

A round is ``local-steps`` optimizer steps when that is > 0 (batches continue through
reshuffled epochs, so hospitals of 15 and 2,000 images do the same work), else
``local-epochs`` passes over the data.

With a :class:`~client.dp_sgd.RecordDP` a round is record-level DP-SGD instead
(client/dp_sgd.py): a second traced step takes each Poisson sample, whose size varies, and
its clip norm, noise multiplier and expected batch size are variables too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from client.augment import Augmenter, round_state
from client.dp_sgd import (
    RecordDP,
    clipped_sum,
    noisy_mean,
    per_example_gradients,
    poisson_sample,
    round_randomness,
)
from client.optimizers import LocalOptimizers
from common.config import TrainConfig
from common.data.schema import Split
from common.errors import ConfigError, invalid_value
from common.metrics import classification_metrics, cross_entropy

EVAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class FitResult:
    weights: list[np.ndarray]
    num_examples: int
    loss: float
    accuracy: float


class LocalTrainer:
    """Trains one model with a FedProx-capable step; ``proximal_mu = 0`` is plain training."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.optimizers = LocalOptimizers(model.trainable_variables)
        self.augment = Augmenter()
        self._anchors = [
            tf.Variable(tf.zeros_like(v), trainable=False) for v in model.trainable_variables
        ]
        self._mu = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self._loss = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
        images = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        labels = tf.TensorSpec((None,), tf.int64)
        # Record-level DP-SGD (fit with `dp`): set per round, read by the traced DP step.
        self._clip_norm = tf.Variable(1.0, trainable=False, dtype=tf.float32)
        self._noise_multiplier = tf.Variable(1.0, trainable=False, dtype=tf.float32)
        self._expected_batch = tf.Variable(1.0, trainable=False, dtype=tf.float32)
        self._noise = tf.random.Generator.from_seed(0)  # reset from OS entropy every DP round
        self.train_step = tf.function(self._step, input_signature=[images, labels])
        self.dp_train_step = tf.function(self._dp_step, input_signature=[images, labels])
        self.dp_noise_step = tf.function(self._dp_noise_step, input_signature=[])
        self._forward = tf.function(self._probabilities, input_signature=[images])
        self.traces = 0

    # -- graphs -----------------------------------------------------------------------
    def _step(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        self.traces += 1  # runs only while tracing: counts (re)traces
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        images = self.augment(images)
        with tf.GradientTape() as tape:
            probabilities = self.model(images, training=True)
            data_loss = self._loss(labels, probabilities)
            proximal = tf.add_n(
                [
                    tf.reduce_sum(tf.square(w - w0))
                    for w, w0 in zip(self.model.trainable_variables, self._anchors, strict=True)
                ]
            )
            objective = data_loss / count + 0.5 * self._mu * proximal
        grads = tape.gradient(objective, self.model.trainable_variables)
        self.optimizers.apply(grads, self.model.trainable_variables)
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(probabilities, axis=1), labels), tf.float32)
        )
        return data_loss, correct

    def _dp_step(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One DP-SGD step on a non-empty Poisson sample of any size."""
        self.traces += 1  # runs only while tracing: counts (re)traces
        images = self.augment(images)  # each example's own augmentation, then its gradient
        grads, losses, probabilities = per_example_gradients(self.model, self._loss, images, labels)
        self._apply_noisy(clipped_sum(grads, self._clip_norm))
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(probabilities, axis=1), labels), tf.float32)
        )
        return tf.reduce_sum(losses), correct

    def _dp_noise_step(self) -> None:
        """The DP-SGD step of an empty Poisson sample: the noise alone (and FedProx's term)."""
        self.traces += 1  # runs only while tracing: counts (re)traces
        self._apply_noisy([tf.zeros_like(v) for v in self.model.trainable_variables])

    def _apply_noisy(self, summed: list[tf.Tensor]) -> None:
        """Noise the sum of clipped gradients, average it over the expected batch size, add
        FedProx's proximal gradient ``mu (w - w0)`` (after the noise: it does not touch the
        data) and let the round's optimizer apply it."""
        variables = self.model.trainable_variables
        noisy = noisy_mean(
            summed, self._noise_multiplier, self._clip_norm, self._expected_batch, self._noise
        )
        update = [
            g + self._mu * (w - w0)
            for g, w, w0 in zip(noisy, variables, self._anchors, strict=True)
        ]
        self.optimizers.apply(update, variables)

    def _probabilities(self, images: tf.Tensor) -> tf.Tensor:
        return self.model(images, training=False)

    # -- per round ----------------------------------------------------------------------
    def load(self, weights: list[np.ndarray]) -> None:
        """Install the global weights and make them FedProx's anchor."""
        self.model.set_weights(weights)
        for anchor, variable in zip(self._anchors, self.model.trainable_variables, strict=True):
            anchor.assign(variable)

    def fit(
        self,
        weights: list[np.ndarray],
        data: Split,
        config: TrainConfig,
        seed: int,
        dp: RecordDP | None = None,
    ) -> FitResult:
        """Train from ``weights`` on ``data``; loss and accuracy are over the last epoch
        (with ``local-steps``: its last ⌈N / batch-size⌉ steps, or all if fewer).

        ``seed`` shuffles the batches and seeds the augmentation. With ``dp``:
        ``dp.steps`` DP-SGD steps instead (:meth:`_fit_dp`); ``seed`` is then not used at
        all (augmentation draws from OS entropy, or from ``dp.seed`` in tests).
        """
        self.load(weights)
        self.optimizers.reset(config.local_optimizer, config.learning_rate, config.local_momentum)
        self._mu.assign(config.proximal_mu)
        self.augment.configure(config, round_state(seed if dp is None else dp.seed))
        if dp is not None:
            return self._fit_dp(data, config, dp)
        per_epoch = epoch_steps(len(data), config.batch_size)
        steps = config.local_steps or per_epoch * config.local_epochs
        totals = np.zeros(3)  # loss, correct, examples over the last epoch's steps
        for step, batch in enumerate(batches(seed, len(data), config.batch_size, steps)):
            loss, correct = self.train_step(data.images[batch], data.labels[batch])
            if step >= steps - per_epoch:
                totals += (float(loss), float(correct), float(batch.size))
        return FitResult(
            weights=self.model.get_weights(),
            num_examples=len(data),
            loss=float(totals[0] / totals[2]),
            accuracy=float(totals[1] / totals[2]),
        )

    def prepare_dp(self, dp: RecordDP, batch_size: int, num_examples: int) -> np.random.Generator:
        """Set the DP step's variables and noise for one round; return its Poisson sampler."""
        if not 1 <= batch_size <= num_examples:
            raise ConfigError(
                invalid_value(
                    "batch-size",
                    f"an integer from 1 to this hospital's {num_examples} training examples "
                    "under dp='record' (the sampling rate batch-size / examples must be ≤ 1)",
                    batch_size,
                )
            )
        # Trace both DP graphs now (once per process): which of them a round needs depends
        # on its samples, the trace count must not.
        self.dp_train_step.get_concrete_function()
        self.dp_noise_step.get_concrete_function()
        sampler, noise_state = round_randomness(dp.seed)
        self._noise.reset(noise_state)
        self._clip_norm.assign(dp.clip_norm)
        self._noise_multiplier.assign(dp.noise_multiplier)
        self._expected_batch.assign(float(batch_size))  # q * N with q = batch_size / N
        return sampler

    def _fit_dp(self, data: Split, config: TrainConfig, dp: RecordDP) -> FitResult:
        """``dp.steps`` DP-SGD steps, each on a Poisson sample of rate batch-size / N.

        Loss and accuracy are over the examples drawn in the last epoch-equivalent (the
        last ``ceil(N / batch-size)`` steps), as the plain fit reports its last epoch;
        should those draws be empty, over the whole round's draws, and should the whole
        round have drawn nothing, of the final weights on ``data``.
        """
        num_examples = len(data)
        sampler = self.prepare_dp(dp, config.batch_size, num_examples)
        rate = config.batch_size / num_examples
        last_epoch_from = dp.steps - epoch_steps(num_examples, config.batch_size)
        totals = np.zeros((2, 3))  # rows: whole round, last epoch; columns: loss, correct, drawn
        for step in range(dp.steps):
            batch = poisson_sample(sampler, num_examples, rate)
            if batch.size == 0:
                self.dp_noise_step()
                continue
            loss, correct = self.dp_train_step(data.images[batch], data.labels[batch])
            drawn = (float(loss), float(correct), float(batch.size))
            totals[0] += drawn
            if step >= last_epoch_from:
                totals[1] += drawn
        weights = self.model.get_weights()
        reported = totals[1] if totals[1, 2] > 0 else totals[0]
        if reported[2] > 0:
            loss_value, accuracy = reported[0] / reported[2], reported[1] / reported[2]
        else:
            scores = self.evaluate(weights, data)
            loss_value, accuracy = scores["loss"], scores["accuracy"]
        return FitResult(
            weights=weights,
            num_examples=num_examples,
            loss=float(loss_value),
            accuracy=float(accuracy),
        )

    def predict(self, images: np.ndarray) -> np.ndarray:
        parts = [
            self._forward(images[start : start + EVAL_BATCH_SIZE]).numpy()
            for start in range(0, images.shape[0], EVAL_BATCH_SIZE)
        ]
        return np.concatenate(parts, axis=0)

    def evaluate(self, weights: list[np.ndarray], data: Split) -> dict[str, float]:
        """Loss, accuracy, AUC, sensitivity and specificity of ``weights`` on ``data``."""
        self.model.set_weights(weights)
        probabilities = self.predict(data.images).astype(np.float64)
        loss = cross_entropy(data.labels, probabilities)
        return {"loss": loss, **classification_metrics(data.labels, probabilities)}


def epoch_steps(num_examples: int, batch_size: int) -> int:
    """Steps of one pass over ``num_examples`` (the last batch may be smaller)."""
    return max(1, math.ceil(num_examples / batch_size))


def batches(seed: int, num_examples: int, batch_size: int, steps: int) -> Iterator[np.ndarray]:
    """``steps`` batches of indices: consecutive slices of a fresh permutation per epoch,
    continuing into the next epoch's permutation after the last (possibly smaller) batch."""
    rng = np.random.default_rng(seed)
    step = 0
    while True:
        order = rng.permutation(num_examples)
        for start in range(0, num_examples, batch_size):
            if step == steps:
                return
            yield order[start : start + batch_size]
            step += 1

"""Local training and evaluation of one Keras model, built and traced once per process.

A :class:`LocalTrainer` owns the model, an Adam optimizer and two ``tf.function`` graphs
(one train step, one forward pass) with fixed input signatures, so a hospital running
many rounds — or a simulation process serving many hospitals — never rebuilds, recompiles
or retraces. Everything that changes per round (global weights, learning rate, FedProx's
mu and its anchor weights, optimizer state) lives in variables that are assigned, not
re-created.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from common.config import TrainConfig
from common.data.schema import Split
from common.metrics import classification_metrics, cross_entropy

EVAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class FitResult:
    weights: list[np.ndarray]
    num_examples: int
    loss: float
    accuracy: float


class LocalTrainer:
    """Trains one model with a FedProx-capable step; ``proximal_mu = 0`` is plain SGD-Adam."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        self.optimizer.build(model.trainable_variables)
        self._anchors = [
            tf.Variable(tf.zeros_like(v), trainable=False) for v in model.trainable_variables
        ]
        self._mu = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self._loss = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
        images = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        labels = tf.TensorSpec((None,), tf.int64)
        self._train_step = tf.function(self._step, input_signature=[images, labels])
        self._forward = tf.function(self._probabilities, input_signature=[images])
        self.traces = 0

    # -- graphs -----------------------------------------------------------------------
    def _step(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        self.traces += 1  # runs only while tracing: counts (re)traces
        count = tf.cast(tf.shape(labels)[0], tf.float32)
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
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(probabilities, axis=1), labels), tf.float32)
        )
        return data_loss, correct

    def _probabilities(self, images: tf.Tensor) -> tf.Tensor:
        return self.model(images, training=False)

    # -- per round ----------------------------------------------------------------------
    def load(self, weights: list[np.ndarray]) -> None:
        """Install the global weights and make them FedProx's anchor."""
        self.model.set_weights(weights)
        for anchor, variable in zip(self._anchors, self.model.trainable_variables, strict=True):
            anchor.assign(variable)

    def fit(
        self, weights: list[np.ndarray], data: Split, config: TrainConfig, seed: int
    ) -> FitResult:
        """Train from ``weights`` on ``data``; loss and accuracy are over the last epoch."""
        self.load(weights)
        self._reset_optimizer(config.learning_rate)
        self._mu.assign(config.proximal_mu)
        rng = np.random.default_rng(seed)
        loss_sum = correct_sum = 0.0
        for _ in range(config.local_epochs):
            loss_sum = correct_sum = 0.0
            order = rng.permutation(len(data))
            for start in range(0, len(data), config.batch_size):
                batch = order[start : start + config.batch_size]
                loss, correct = self._train_step(data.images[batch], data.labels[batch])
                loss_sum += float(loss)
                correct_sum += float(correct)
        return FitResult(
            weights=self.model.get_weights(),
            num_examples=len(data),
            loss=loss_sum / len(data),
            accuracy=correct_sum / len(data),
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

    def _reset_optimizer(self, learning_rate: float) -> None:
        """Start every round with fresh Adam moments: no state carries between rounds,
        and none between the hospitals a simulation process serves in turn."""
        for variable in self.optimizer.variables:
            variable.assign(tf.zeros_like(variable))
        self.optimizer.learning_rate = learning_rate

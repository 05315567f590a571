"""The local optimizers of a hospital's round: Adam, or SGD with momentum.

Both are built once per trainer, on the model's trainable variables, and live side by side;
which one a round uses (``local-optimizer``), its learning rate and SGD's momentum are
variables, and the traced step applies the update with a ``tf.cond`` on the choice. So
switching optimizers, learning rates or momenta between rounds — or between the hospitals a
simulation process serves — never retraces. Every round starts from fresh optimizer state
(:meth:`LocalOptimizers.reset`): nothing carries from one round or hospital to the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from common.config import LocalOptimizer

KINDS: tuple[LocalOptimizer, ...] = ("adam", "sgd")  # position = value of the choice variable


class MomentumSGD(keras.optimizers.SGD):
    """Keras's SGD with (non-Nesterov) momentum, whose momentum is a variable.

    Keras's own SGD reads ``momentum`` as a Python float while tracing (a new value would
    need a new graph) and creates its velocity slots only if it is non-zero; here the slots
    always exist and ``m ← μ·m − lr·g; w ← w + m`` reads μ from :attr:`momentum_value`.
    μ = 0 is plain SGD.
    """

    def __init__(self) -> None:
        super().__init__(learning_rate=0.01, momentum=0.5)  # momentum ≠ 0: build the slots
        self.momentum_value = tf.Variable(0.9, trainable=False, dtype=tf.float32)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        velocity = self.momentums[self._get_variable_index(variable)]
        learning_rate = tf.cast(learning_rate, variable.dtype)
        momentum = tf.cast(self.momentum_value, variable.dtype)
        self.assign(
            velocity, velocity * momentum - tf.cast(gradient, variable.dtype) * learning_rate
        )
        self.assign_add(variable, velocity)


class LocalOptimizers:
    """One optimizer per kind, built once; :meth:`apply` uses the round's choice."""

    def __init__(self, variables: Sequence[tf.Variable]) -> None:
        self.by_kind: dict[LocalOptimizer, keras.optimizers.Optimizer] = {
            "adam": keras.optimizers.Adam(learning_rate=1e-3),
            "sgd": MomentumSGD(),
        }
        for optimizer in self.by_kind.values():
            optimizer.build(variables)
        self._choice = tf.Variable(0, trainable=False, dtype=tf.int32)
        self.kind: LocalOptimizer = "adam"

    @property
    def active(self) -> keras.optimizers.Optimizer:
        """The optimizer this round uses (its ``iterations`` count the round's steps)."""
        return self.by_kind[self.kind]

    def reset(self, kind: LocalOptimizer, learning_rate: float, momentum: float) -> None:
        """Start a round: zero every optimizer's state (moments, velocities, step count)
        and set the choice, the learning rate and SGD's momentum."""
        for optimizer in self.by_kind.values():
            for variable in optimizer.variables:
                variable.assign(tf.zeros_like(variable))
            optimizer.learning_rate = learning_rate
        sgd = self.by_kind["sgd"]
        if isinstance(sgd, MomentumSGD):
            sgd.momentum_value.assign(momentum)
        self._choice.assign(KINDS.index(kind))
        self.kind = kind

    def apply(self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """Apply ``grads`` with the round's optimizer (inside the traced step)."""

        def update(kind: LocalOptimizer) -> Any:
            def run() -> tf.Tensor:
                self.by_kind[kind].apply_gradients(zip(grads, variables, strict=True))
                return tf.constant(True)

            return run

        tf.cond(tf.equal(self._choice, KINDS.index("sgd")), update("sgd"), update("adam"))

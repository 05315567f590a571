"""The cost of one DP-SGD step against one plain train step, same model, same batch.

Both are ``LocalTrainer``'s traced steps (forward, backward, Adam update); the DP step adds
per-example gradients (``tf.vectorized_map``), clipping and noise (client/dp_sgd.py). Each
is traced and warmed up first, then timed over ``steps`` calls on fixed random data; the
DP step gets a batch of exactly ``batch_size`` examples (a Poisson sample's expected size).
The two are timed in alternating blocks of ``steps`` calls, ``BLOCKS`` each, so a machine
whose load changes during the measurement slows both alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

WARM_UP_STEPS = 3
BLOCKS = 5


def _seconds(step: Callable[[Any, Any], Any], images: Any, labels: Any, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step(images, labels)[0].numpy()  # .numpy(): wait for the step to finish
    return time.perf_counter() - started


def measure_step_cost(
    model_name: str, batch_size: int = 32, steps: int = 20, image_size: int = 28
) -> dict[str, float]:
    """``{"plain_ms", "dp_ms", "ratio"}``: mean milliseconds of one traced step each."""
    from common.quiet import import_keras

    import_keras()
    import tensorflow as tf

    from client.dp_sgd import RecordDP
    from client.training import LocalTrainer
    from common.data.schema import DataSpec
    from common.models import build_model

    spec = DataSpec(
        class_names=("normal", "pneumonia"), image_size=image_size, channels=1, min_examples=1
    )
    trainer = LocalTrainer(build_model(model_name, spec))
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((batch_size, image_size, image_size, 1), dtype=np.float32))
    labels = tf.constant(rng.integers(0, 2, batch_size, dtype=np.int64))
    trainer.prepare_dp(
        RecordDP(clip_norm=1.0, noise_multiplier=1.0, steps=steps, seed=0),
        batch_size,
        num_examples=batch_size * 10,
    )
    timed = {"plain": trainer.train_step, "dp": trainer.dp_train_step}
    for step in timed.values():
        _seconds(step, images, labels, WARM_UP_STEPS)  # traces, then warms up
    totals = dict.fromkeys(timed, 0.0)
    for _ in range(BLOCKS):
        for kind, step in timed.items():
            totals[kind] += _seconds(step, images, labels, steps)
    plain_ms, dp_ms = (totals[kind] / (BLOCKS * steps) * 1000.0 for kind in ("plain", "dp"))
    return {"plain_ms": plain_ms, "dp_ms": dp_ms, "ratio": dp_ms / plain_ms}


if __name__ == "__main__":
    import json
    import sys

    for name in sys.argv[1:] or ["cnn-small", "cnn"]:
        print(name, json.dumps(measure_step_cost(name)), flush=True)

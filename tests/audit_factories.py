"""Fabricated finished runs for the membership audit's tests: a tiny MedMNIST-style file of
random images with random labels (nothing to learn but the images themselves), a
``config.json`` and a ``metrics.json`` naming which simulated hospitals trained."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tests.factories import run_config

SIZE = 8  # pixels per side: the smallest image the config accepts


def write_tiny_npz(
    path: Path, *, train: int = 60, val: int = 10, test: int = 20, seed: int = 0
) -> Path:
    """Random uint8 images and labels; test[0] repeats train[5] and val[2] repeats val[1]."""
    rng = np.random.default_rng(seed)
    count = train + val + test
    images = rng.integers(0, 256, size=(count, SIZE, SIZE), dtype=np.uint8)
    labels = rng.integers(0, 2, size=count)
    if val >= 3:
        images[train + 2], labels[train + 2] = images[train + 1], labels[train + 1]
    if test and train > 5:
        images[train + val], labels[train + val] = images[5], labels[5]
    np.savez(
        path,
        train_images=images[:train],
        train_labels=labels[:train],
        val_images=images[train : train + val],
        val_labels=labels[train : train + val],
        test_images=images[train + val :],
        test_labels=labels[train + val :].reshape(-1, 1),
    )
    return path


def audit_settings(data: Path, **overrides: Any) -> dict[str, Any]:
    """A run config on ``data`` (Python names: ``val_fraction=0.1``)."""
    settings: dict[str, Any] = {
        "dataset": "medmnist",
        "data_path": str(data),
        "image_size": SIZE,
        "min_examples": 1,
        "partitioner": "iid",
        "model": "cnn-small",
        **overrides,
    }
    return run_config(**settings)


def _node(partition: int) -> dict[str, str]:
    return {"name": f"hospital-{partition}", "data-kind": "simulated-medmnist"}


def write_run(
    run_dir: Path,
    values: Mapping[str, Any],
    *,
    hospitals: int = 3,
    trained: Iterable[int] = (0, 1),
    epsilons: Mapping[int, float] | None = None,
) -> Path:
    """``config.json`` and a one-round ``metrics.json``: every hospital evaluated, those in
    ``trained`` trained ``ok`` (reporting ``epsilons`` under record-level DP), the others
    failed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dict(values)), encoding="utf-8")
    ok = set(trained)
    train: dict[str, Any] = {}
    for p in range(hospitals):
        metrics: dict[str, Any] = {"num-examples": 10}
        if epsilons and p in epsilons:
            metrics["epsilon"] = epsilons[p]
        status = "ok" if p in ok else "failed"
        train[str(1000 + p)] = {**_node(p), "status": status, "metrics": metrics}
    evaluate = {str(1000 + p): {**_node(p), "status": "ok"} for p in range(hospitals)}
    record: dict[str, Any] = {"round": 1, "nodes": {"train": train, "evaluate": evaluate}}
    if values.get("dp", "off") != "off":
        reached = max(epsilons.values()) if epsilons else None
        record["privacy"] = {"mode": values["dp"], "delta": values["dp-delta"], "epsilon": reached}
    document = {"rounds": [record], "outcome": {"status": "completed"}}
    (run_dir / "metrics.json").write_text(json.dumps(document), encoding="utf-8")
    return run_dir


# -- a tiny model that memorises its training images ---------------------------------------
HIDDEN = 1024  # random ReLU features: more than the images any test trains on
RIDGE = 0.01  # keeps the logits of unseen images moderate


def _features(images: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    flat = images.reshape(images.shape[0], -1).astype(np.float64)
    return np.maximum(flat @ weights[0] + weights[1], 0.0)


def memorizer(
    images: np.ndarray, labels: np.ndarray, seed: int, margin: float = 3.0
) -> list[np.ndarray]:
    """Weights of Flatten → Dense(HIDDEN, relu, random) → Dense(2, softmax) whose logits
    fit ±``margin`` on the training images (ridge regression; no Keras training)."""
    rng = np.random.default_rng(seed)
    inputs = int(np.prod(images.shape[1:]))
    hidden = [rng.standard_normal((inputs, HIDDEN)) / np.sqrt(inputs), np.zeros(HIDDEN)]
    features = _features(images, hidden)
    target = np.where(np.eye(2)[labels] > 0, margin, -margin)
    design = np.hstack([features, np.ones((features.shape[0], 1))])
    gram = design.T @ design + RIDGE * np.eye(design.shape[1])
    solution = np.linalg.solve(gram, design.T @ target)
    weights = [*hidden, solution[:-1], solution[-1]]
    return [w.astype(np.float32) for w in weights]


def memorizer_probabilities(weights: list[np.ndarray], images: np.ndarray) -> np.ndarray:
    logits = _features(images, weights) @ weights[2] + weights[3]
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def save_memorizer(weights: list[np.ndarray], path: Path) -> Path:
    """The memoriser as the run's ``model.keras``."""
    from common.quiet import import_keras

    keras = import_keras()
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.set_weights(weights)
    model.save(path)
    return path

"""Small factories shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from common.config import AppConfig, parse_app_config
from common.data.schema import DataSpec
from common.manifest import declared_defaults, project_root


def run_config(**overrides: Any) -> dict[str, Any]:
    """The declared defaults with ``overrides`` (Python names: ``local_epochs=2``)."""
    values = declared_defaults(project_root() / "pyproject.toml")
    for name, value in overrides.items():
        key = name.replace("_", "-")
        if key not in values:
            raise KeyError(key)
        values[key] = value
    return values


def coordinator_config(
    run_dir: Path, rounds: int, hospitals: int, resume: bool = False, **overrides: Any
) -> dict[str, Any]:
    """A ``cnn-small`` run of ``rounds`` rounds in ``run_dir`` that waits for all of
    ``hospitals`` in every phase (for a coordinator driven by a fake grid)."""
    return run_config(
        model="cnn-small",
        num_server_rounds=rounds,
        min_train_nodes=hospitals,
        min_evaluate_nodes=hospitals,
        min_available_nodes=hospitals,
        run_dir=str(run_dir),
        resume=resume,
        **overrides,
    )


def app_config(**overrides: Any) -> AppConfig:
    return parse_app_config(run_config(**overrides))


def data_spec(classes: int = 2, size: int = 28, channels: int = 1) -> DataSpec:
    names = ("normal", "pneumonia", "covid", "other")[:classes]
    return DataSpec(class_names=names, image_size=size, channels=channels, min_examples=1)


def random_images(n: int, size: int = 28, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, channels), dtype=np.float32)


# The real simulation several e2e tests share (3 hospitals x 2 rounds, through Ray).
E2E_HOSPITALS = 3
E2E_OVERRIDES: dict[str, Any] = {
    "num-server-rounds": 2,
    "model": "cnn-small",
    "synthetic-examples": 150,
    "min-available-nodes": 3,
    "min-train-nodes": 3,
    "min-evaluate-nodes": 3,
}


def central_set(path: Path) -> Path:
    """A MedMNIST-style .npz held by the coordinator, from a hospital no node simulates."""
    from common.data.synthetic import synthetic_site

    site = synthetic_site(7, 99, 80, app_config().data.spec())
    as_uint8 = (site.test.images[..., 0] * 255).round().astype(np.uint8)
    np.savez(
        path,
        train_images=as_uint8,
        train_labels=site.test.labels,
        test_images=as_uint8,
        test_labels=site.test.labels.reshape(-1, 1),
    )
    return path

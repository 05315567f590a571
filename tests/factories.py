"""Small factories shared by the tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from common.config import AppConfig, declared_defaults, parse_app_config, project_root
from common.data.schema import DataSpec


def run_config(**overrides: Any) -> dict[str, Any]:
    """The declared defaults with ``overrides`` (Python names: ``local_epochs=2``)."""
    values = declared_defaults(project_root() / "pyproject.toml")
    for name, value in overrides.items():
        key = name.replace("_", "-")
        if key not in values:
            raise KeyError(key)
        values[key] = value
    return values


def app_config(**overrides: Any) -> AppConfig:
    return parse_app_config(run_config(**overrides))


def data_spec(classes: int = 2, size: int = 28, channels: int = 1) -> DataSpec:
    names = ("normal", "pneumonia", "covid", "other")[:classes]
    return DataSpec(class_names=names, image_size=size, channels=channels, min_examples=1)


def random_images(n: int, size: int = 28, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, channels), dtype=np.float32)

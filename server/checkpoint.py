"""Checkpoints: everything needed to continue a run after the coordinator stops.

After every round the loop writes ``<run-dir>/checkpoints/round-NNNNN.npz`` atomically:
the global arrays, the round number, the strategy's state (``m_t`` / ``v_t`` /
``current_arrays`` of the adaptive strategies, ``momentum_vector`` / ``current_arrays``
of FedAvgM), the metrics history and the server's random state (Flower samples nodes
with Python's ``random``). Only the newest ``checkpoints-keep`` files are kept. Arrays
are stored as plain ``.npy`` entries and everything else as one JSON string, so loading
never unpickles.
"""

from __future__ import annotations

import json
import random
import zipfile
from dataclasses import dataclass
from logging import WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.common import log
from flwr.serverapp.strategy import Strategy

from common.config import AppConfig
from common.errors import RunError
from common.files import atomic_path

CHECKPOINT_DIR = "checkpoints"
FORMAT = 1
STATE_ATTRIBUTES = ("m_t", "v_t", "current_arrays", "momentum_vector")


@dataclass(frozen=True)
class Checkpoint:
    server_round: int
    arrays: ArrayRecord
    strategy_state: dict[str, Any]
    rounds: list[dict[str, Any]]
    rng: dict[str, Any]
    fit: dict[str, Any]


def fit_of(config: AppConfig) -> dict[str, Any]:
    """The settings a checkpoint must share with the run that continues it."""
    return {
        "model": config.model,
        "strategy": config.federation.strategy,
        "class-names": config.data.class_names,
        "image-size": config.data.image_size,
        "channels": config.data.channels,
    }


def checkpoint_path(run_dir: Path, server_round: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"round-{server_round:05d}.npz"


def innermost(strategy: Strategy) -> Strategy:
    """The Flower strategy under any wrappers (wrappers keep it as ``.strategy``)."""
    while isinstance(getattr(strategy, "strategy", None), Strategy):
        strategy = strategy.strategy  # type: ignore[attr-defined]
    return strategy


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """The stateful attributes the wrapped strategy has set (None ones are left out)."""
    inner = innermost(strategy)
    return {
        name: getattr(inner, name)
        for name in STATE_ATTRIBUTES
        if getattr(inner, name, None) is not None
    }


def restore_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    inner = innermost(strategy)
    for name, value in state.items():
        if not hasattr(inner, name):
            raise RunError(f"Cannot restore `{name}`: {type(inner).__name__} has no such state.")
        setattr(inner, name, value)


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# -- encoding ---------------------------------------------------------------------------
def _encode(name: str, value: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Put ``value``'s arrays into ``arrays`` under ``name.i``; return how to rebuild it."""
    if isinstance(value, ArrayRecord):
        kind, keys, items = "arrayrecord", list(value.keys()), value.to_numpy_ndarrays()
    elif isinstance(value, dict):
        kind, keys, items = "dict", list(value), [np.asarray(v) for v in value.values()]
    elif isinstance(value, list):
        kind, keys, items = "list", [], [np.asarray(v) for v in value]
    else:
        raise TypeError(f"Cannot checkpoint `{name}` of type {type(value).__name__}")
    for index, item in enumerate(items):
        arrays[f"{name}.{index}"] = item
    return {"kind": kind, "keys": keys, "count": len(items)}


def _decode(name: str, layout: dict[str, Any], archive: Any) -> Any:
    items = [archive[f"{name}.{index}"] for index in range(layout["count"])]
    if layout["kind"] == "arrayrecord":
        return ArrayRecord({k: Array(v) for k, v in zip(layout["keys"], items, strict=True)})
    if layout["kind"] == "dict":
        return dict(zip(layout["keys"], items, strict=True))
    return items


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint, keep: int) -> Path:
    """Write ``checkpoint`` atomically, then delete all but the newest ``keep``."""
    arrays: dict[str, np.ndarray] = {}
    meta = {
        "format": FORMAT,
        "round": checkpoint.server_round,
        "fit": checkpoint.fit,
        "global": _encode("global", checkpoint.arrays, arrays),
        "state": {
            name: _encode(f"state-{name}", value, arrays)
            for name, value in checkpoint.strategy_state.items()
        },
        "rounds": checkpoint.rounds,
        "rng": checkpoint.rng,
    }
    target = checkpoint_path(run_dir, checkpoint.server_round)
    with atomic_path(target) as tmp, tmp.open("wb") as handle:
        np.savez(handle, allow_pickle=False, meta=np.array(json.dumps(meta)), **arrays)
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return target


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files, newest round first."""
    folder = run_dir / CHECKPOINT_DIR
    return sorted(folder.glob("round-*.npz"), reverse=True) if folder.is_dir() else []


def read_checkpoint(path: Path) -> Checkpoint:
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {meta.get('format')!r}")
        return Checkpoint(
            server_round=int(meta["round"]),
            arrays=_decode("global", meta["global"], archive),
            strategy_state={
                name: _decode(f"state-{name}", layout, archive)
                for name, layout in meta["state"].items()
            },
            rounds=list(meta["rounds"]),
            rng=dict(meta["rng"]),
            fit=dict(meta["fit"]),
        )


def latest_checkpoint(run_dir: Path) -> tuple[Path, Checkpoint] | None:
    """The newest readable checkpoint; unreadable ones are logged and skipped."""
    for path in list_checkpoints(run_dir):
        try:
            return path, read_checkpoint(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
            log(WARNING, "[fedclinic] skipping unreadable checkpoint %s: %s", path, err)
    return None


def check_fit(path: Path, checkpoint: Checkpoint, config: AppConfig, model: ArrayRecord) -> None:
    """Refuse, in one line, a checkpoint made for another model, strategy or data contract."""
    expected = fit_of(config)
    for key, value in expected.items():
        found = checkpoint.fit.get(key)
        if found != value:
            raise RunError(
                f"Cannot resume from {path}: it was made with `{key}`={found!r}, "
                f"this run has `{key}`={value!r}."
            )
    shapes = [(a.shape, a.dtype) for a in checkpoint.arrays.values()]
    if shapes != [(a.shape, a.dtype) for a in model.values()]:
        raise RunError(
            f"Cannot resume from {path}: its weights do not fit the model `{config.model}`."
        )

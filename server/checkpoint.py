"""Checkpoints: everything needed to continue a run after the coordinator stops.

After every round the loop writes ``<run-dir>/checkpoints/round-NNNNN.npz`` atomically:
the global arrays, the round number, the strategy's state (``m_t`` / ``v_t`` /
``current_arrays`` of the adaptive strategies, ``momentum_vector`` / ``current_arrays``
of FedAvgM, ``center`` / ``current_arrays`` of CenteredClipping), the best round by
validation AUC and its arrays, the metrics history, the server's random state (Flower
samples nodes with Python's ``random``) and, under hospital-level DP, the privacy
accountant's state (Flower's ``RdpAccountant.state_dict()``), so a resumed run continues
the same ε.
Arrays are stored as plain ``.npy`` entries and everything else as one JSON string, so
loading never unpickles.

Pruning keeps the ``checkpoints-keep`` newest by round number, counting only rounds up
to the one just written, so the fresh checkpoint is never deleted. Files numbered higher
than the current round can only be unreadable leftovers (a resume continues from the
newest readable one and moves the unreadable newer ones to ``checkpoints/unreadable/``);
pruning neither counts nor deletes them.
"""

from __future__ import annotations

import json
import random
import re
import zipfile
from dataclasses import dataclass
from logging import WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.common import log
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedYogi, Strategy

from common.config import AppConfig
from common.errors import RunError
from common.files import atomic_path, fsync_directory
from server.centered_clip import CenteredClipping
from server.dp_settings import privacy_fit

CHECKPOINT_DIR = "checkpoints"
UNREADABLE_DIR = "unreadable"
FORMAT = 1
ROUND_FILE = re.compile(r"round-(\d+)\.npz")
# Fit settings of checkpoints written before the setting existed.
LEGACY_FIT: dict[str, Any] = {"dp": "off"}

# What a checkpoint saves of the stateful strategies (Flower 1.42:
# flwr/serverapp/strategy/fedopt.py and fedavgm.py; ours: server/centered_clip.py). Every
# attribute must exist on the strategy object once it is built (it holds None until the
# first round); if Flower renames one, `check_strategy_state` stops the run instead of
# saving nothing.
STRATEGY_STATE: tuple[tuple[type[Strategy], tuple[str, ...]], ...] = (
    (FedAdam, ("m_t", "v_t", "current_arrays")),
    (FedYogi, ("m_t", "v_t", "current_arrays")),
    (FedAdagrad, ("m_t", "v_t", "current_arrays")),
    (FedAvgM, ("momentum_vector", "current_arrays")),
    (CenteredClipping, ("center", "current_arrays")),
)
UNREADABLE_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    zipfile.BadZipFile,
)


@dataclass(frozen=True)
class Checkpoint:
    server_round: int
    arrays: ArrayRecord
    strategy_state: dict[str, Any]
    rounds: list[dict[str, Any]]
    rng: dict[str, Any]
    fit: dict[str, Any]
    privacy: dict[str, Any] | None = None  # the DP accountant's state (dp='hospital')
    best: dict[str, Any] | None = None  # the best round so far (server.selection.BestRound)
    best_arrays: ArrayRecord | None = None  # its global arrays


def fit_of(config: AppConfig) -> dict[str, Any]:
    """The settings a checkpoint must share with the run that continues it (the DP ones:
    :func:`server.dp_settings.privacy_fit`)."""
    return {
        "model": config.model,
        "strategy": config.federation.strategy,
        "class-names": config.data.class_names,
        "image-size": config.data.image_size,
        "channels": config.data.channels,
        **privacy_fit(config),
    }


def checkpoint_remains(server_round: int) -> str:
    """What a run that stops in ``server_round`` leaves to resume from (one sentence)."""
    if server_round > 1:
        return f"The checkpoint of round {server_round - 1} remains."
    return "No round completed, so there is no checkpoint."


def checkpoint_path(run_dir: Path, server_round: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"round-{server_round:05d}.npz"


def innermost(strategy: Strategy) -> Strategy:
    """The Flower strategy under any wrappers (wrappers keep it as ``.strategy``)."""
    while isinstance(getattr(strategy, "strategy", None), Strategy):
        strategy = strategy.strategy  # type: ignore[attr-defined]
    return strategy


def state_attributes(strategy: Strategy) -> tuple[str, ...]:
    """The attributes a checkpoint saves for the (wrapped) strategy; () if it has no state."""
    inner = innermost(strategy)
    for kind, names in STRATEGY_STATE:
        if isinstance(inner, kind):
            return names
    return ()


def check_strategy_state(strategy: Strategy) -> None:
    """Refuse, before round 1, a strategy that lacks an attribute its checkpoints save."""
    inner = innermost(strategy)
    missing = [name for name in state_attributes(inner) if not hasattr(inner, name)]
    if missing:
        names = ", ".join(f"`{name}`" for name in missing)
        raise RunError(
            f"Cannot checkpoint {type(inner).__name__}: it has no attribute {names}, so its "
            "state would not be saved and a resumed run would silently start it afresh "
            "(has Flower renamed it? update STRATEGY_STATE in server/checkpoint.py)."
        )


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """The wrapped strategy's state attributes that are set (None ones are left out)."""
    inner = innermost(strategy)
    values = {name: getattr(inner, name) for name in state_attributes(inner)}
    return {name: value for name, value in values.items() if value is not None}


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
        "privacy": checkpoint.privacy,
        "best": checkpoint.best,
        "best-arrays": (
            None
            if checkpoint.best_arrays is None
            else _encode("best", checkpoint.best_arrays, arrays)
        ),
    }
    target = checkpoint_path(run_dir, checkpoint.server_round)
    with atomic_path(target) as tmp, tmp.open("wb") as handle:
        np.savez(handle, allow_pickle=False, meta=np.array(json.dumps(meta)), **arrays)
    older = [p for p in list_checkpoints(run_dir) if round_of(p) < checkpoint.server_round]
    pruned = older[keep - 1 :]
    for old in pruned:
        old.unlink(missing_ok=True)
    if pruned:
        fsync_directory(target.parent)
    return target


def round_of(path: Path) -> int:
    """The round number in a checkpoint's file name (``round-00012.npz`` → 12)."""
    match = ROUND_FILE.fullmatch(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a checkpoint file name")
    return int(match.group(1))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files, highest round number first (numerically, not by name)."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if ROUND_FILE.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=round_of, reverse=True)


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
            privacy=meta.get("privacy"),
            best=meta.get("best"),
            best_arrays=(
                None
                if meta.get("best-arrays") is None
                else _decode("best", meta["best-arrays"], archive)
            ),
        )


@dataclass(frozen=True)
class CheckpointScan:
    """The newest readable checkpoint and every newer file that could not be read."""

    newest: tuple[Path, Checkpoint] | None
    unreadable: list[tuple[Path, str]]  # (file, why); all checkpoints when none is readable


def scan_checkpoints(run_dir: Path) -> CheckpointScan:
    unreadable: list[tuple[Path, str]] = []
    for path in list_checkpoints(run_dir):
        try:
            return CheckpointScan((path, read_checkpoint(path)), unreadable)
        except UNREADABLE_ERRORS as err:
            unreadable.append((path, f"{type(err).__name__}: {err}"))
    return CheckpointScan(None, unreadable)


def set_aside(path: Path, reason: str) -> Path:
    """Move an unreadable checkpoint to ``checkpoints/unreadable/`` (kept, never deleted)."""
    folder = path.parent / UNREADABLE_DIR
    folder.mkdir(exist_ok=True)
    target, copies = folder / path.name, 0
    while target.exists():  # set aside by an earlier resume: keep both
        copies += 1
        target = folder / f"{path.stem}.{copies}{path.suffix}"
    path.replace(target)
    fsync_directory(folder)
    fsync_directory(path.parent)
    log(WARNING, "[fedclinic] unreadable checkpoint %s (%s) moved to %s", path, reason, target)
    return target


def check_fit(path: Path, checkpoint: Checkpoint, config: AppConfig, model: ArrayRecord) -> None:
    """Refuse, in one line, a checkpoint made for another model, strategy or data contract."""
    expected = fit_of(config)
    for key, value in expected.items():
        found = checkpoint.fit.get(key, LEGACY_FIT.get(key))
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

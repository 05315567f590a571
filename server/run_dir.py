"""The run directory: what a coordinator keeps of a run."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.files import write_atomic, write_json_atomic

if TYPE_CHECKING:
    import keras

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"  # the best round by validation AUC (the last without one)
LAST_MODEL_FILE = "model-last.keras"  # the last round


def resolve_run_dir(run_dir: str, strategy: str, cwd: Path) -> Path:
    """``run-dir`` as an absolute path; empty means ``runs/<UTC time>-<strategy>``."""
    if run_dir:
        path = Path(run_dir).expanduser()
        return path if path.is_absolute() else (cwd / path).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return (cwd / "runs" / f"{stamp}-{strategy}").resolve()


@dataclass
class RunDirectory:
    """A run's files. ``owns_metrics`` is False while a resumed run has not yet loaded its
    history: until then nothing (not even a failure) rewrites the existing ``metrics.json``.
    """

    path: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] = field(default_factory=lambda: {"status": "running"})
    owns_metrics: bool = True

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, resolved: dict[str, Any]) -> None:
        write_json_atomic(self.path / CONFIG_FILE, resolved)

    def add_round(self, record: dict[str, Any]) -> None:
        """Append one round's record and rewrite ``metrics.json`` atomically."""
        self.rounds.append(record)
        self.write_metrics()

    def restore(self, rounds: list[dict[str, Any]]) -> None:
        """Continue from a checkpoint's history (rounds after it are dropped: see
        `keep_metrics_copy`); from now on this run writes ``metrics.json``."""
        self.rounds = list(rounds)
        self.outcome = {"status": "running"}
        self.owns_metrics = True
        self.write_metrics()

    def recorded_rounds(self) -> list[int] | None:
        """The round numbers ``metrics.json`` lists: [] if there is none, None if unreadable."""
        target = self.path / METRICS_FILE
        if not target.exists():
            return []
        try:
            return [int(r["round"]) for r in json.loads(target.read_text("utf-8"))["rounds"]]
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def keep_metrics_copy(self) -> Path:
        """Copy ``metrics.json`` to ``metrics.before-resume-<UTC time>.json``; return it."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = self.path / f"metrics.before-resume-{stamp}.json"

        def copy(tmp: Path) -> None:
            shutil.copyfile(self.path / METRICS_FILE, tmp)

        write_atomic(target, copy)
        return target

    def finish(self, status: str, message: str = "", details: dict[str, Any] | None = None) -> None:
        """Record the outcome (with ``details``: e.g. the best round), unless a resumed run
        failed before loading its history."""
        if not self.owns_metrics:
            return
        self.outcome = {"status": status, "message": message} if message else {"status": status}
        self.outcome.update(details or {})
        self.write_metrics()

    def write_metrics(self) -> None:
        write_json_atomic(
            self.path / METRICS_FILE, {"rounds": self.rounds, "outcome": self.outcome}
        )

    def save_model(self, model: keras.Model, name: str = MODEL_FILE) -> Path:
        target = self.path / name
        write_atomic(target, lambda tmp: model.save(tmp))
        return target

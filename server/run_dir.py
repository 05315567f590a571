"""The run directory: what a coordinator keeps of a run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.files import write_atomic, write_json_atomic

if TYPE_CHECKING:
    import keras

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"


def resolve_run_dir(run_dir: str, strategy: str, cwd: Path) -> Path:
    """``run-dir`` as an absolute path; empty means ``runs/<UTC time>-<strategy>``."""
    if run_dir:
        path = Path(run_dir).expanduser()
        return path if path.is_absolute() else (cwd / path).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return (cwd / "runs" / f"{stamp}-{strategy}").resolve()


@dataclass
class RunDirectory:
    path: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] = field(default_factory=lambda: {"status": "running"})

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, resolved: dict[str, Any]) -> None:
        write_json_atomic(self.path / CONFIG_FILE, resolved)

    def add_round(self, record: dict[str, Any]) -> None:
        """Append one round's record and rewrite ``metrics.json`` atomically."""
        self.rounds.append(record)
        self.write_metrics()

    def restore(self, rounds: list[dict[str, Any]]) -> None:
        """Continue from a checkpoint's history: rounds after it are dropped."""
        self.rounds = list(rounds)
        self.outcome = {"status": "running"}
        self.write_metrics()

    def finish(self, status: str, message: str = "") -> None:
        self.outcome = {"status": status, "message": message} if message else {"status": status}
        self.write_metrics()

    def write_metrics(self) -> None:
        write_json_atomic(
            self.path / METRICS_FILE, {"rounds": self.rounds, "outcome": self.outcome}
        )

    def save_model(self, model: keras.Model) -> Path:
        target = self.path / MODEL_FILE
        write_atomic(target, lambda tmp: model.save(tmp))
        return target

"""Helpers shared by the benchmark scripts: data, child simulations, memory, tables, JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.files import write_json_atomic
from deployment.processes import process_tree

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = "../shared/data/pneumoniamnist.npz"


def resolve_data(path: str) -> Path:
    """``path`` as an absolute path; relative paths are taken from the repository root."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (REPO / candidate).resolve()


def existing_data(path: str) -> Path | None:
    """:func:`resolve_data`, or None after one error line on stderr if no such file."""
    data = resolve_data(path)
    if data.is_file():
        return data
    print(f"error: data file not found: {data}", file=sys.stderr)
    return None


def add_federation_args(parser: argparse.ArgumentParser, rounds: int, out: str) -> None:
    """The options every MedMNIST benchmark shares: data, split, rounds, model, output."""
    parser.add_argument("--data", default=DEFAULT_DATA, help="MedMNIST .npz (relative: to repo)")
    parser.add_argument("--hospitals", type=int, default=10, help="simulated hospitals")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label-skew alpha")
    parser.add_argument("--rounds", type=int, default=rounds, help="federation rounds")
    parser.add_argument("--local-epochs", type=int, default=1, help="local epochs per round")
    parser.add_argument("--model", default="cnn", choices=["cnn", "cnn-small", "resnet-gn"])
    parser.add_argument("--work-dir", default="", help="run directories (default: a temp dir)")
    parser.add_argument("--out", default=out, help="JSON results file")


def medmnist_overrides(args: argparse.Namespace, strategy: str) -> dict[str, Any]:
    """Run config for ``args.hospitals`` Dirichlet-split hospitals on ``args.data``."""
    return {
        "dataset": "medmnist",
        "data-path": str(resolve_data(args.data)),
        "partitioner": "dirichlet",
        "dirichlet-alpha": args.alpha,
        "num-server-rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "model": args.model,
        "strategy": strategy,
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    with open("/proc/meminfo", encoding="utf-8") as handle:
        total_kib = int(handle.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(total_kib / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def load_average() -> float:
    """The 1-minute load average: other work on the machine skews every timing."""
    return os.getloadavg()[0]


# -- output ------------------------------------------------------------------------------


def write_json(path: Path, payload: dict[str, Any]) -> None:
    write_json_atomic(path, payload)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- memory of a process tree (Linux /proc; no psutil needed) -------------------------------
def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_mib(root: int) -> dict[str, float]:
    """RSS (shared pages counted in every process) and PSS (shared pages split) of the tree,
    and the PSS of ``root`` alone (there: the ServerApp, Flower's LinkState and Ray's driver)."""
    pids = process_tree(root)
    rss = sum(_status_kib(pid, "VmRSS:") for pid in pids)
    pss = sum(_pss_kib(pid) for pid in pids)
    return {
        "rss_mib": rss / 1024,
        "pss_mib": pss / 1024,
        "root_pss_mib": _pss_kib(root) / 1024,
        "processes": float(len(pids)),
    }


@dataclass
class MemoryWatch:
    """Samples a process tree's memory in a thread; records the peak and per-round values.

    Rounds are detected by the number of records in the run directory's ``metrics.json``,
    which the ServerApp rewrites after every round.
    """

    root: int
    metrics_file: Path | None = None
    interval: float = 0.5
    peak: dict[str, float] = field(default_factory=lambda: {"rss_mib": 0.0, "pss_mib": 0.0})
    rounds: list[dict[str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _rounds_done(self) -> int:
        if self.metrics_file is None or not self.metrics_file.is_file():
            return 0
        try:
            return len(json.loads(self.metrics_file.read_text(encoding="utf-8"))["rounds"])
        except (OSError, ValueError, KeyError):
            return len(self.rounds)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            sample = tree_memory_mib(self.root)
            for key in ("rss_mib", "pss_mib"):
                self.peak[key] = max(self.peak[key], sample[key])
            done = self._rounds_done()
            while len(self.rounds) < done:
                self.rounds.append(
                    {"round": len(self.rounds) + 1, "t": time.monotonic() - started, **sample}
                )
            self._stop.wait(self.interval)


# -- simulations in a child process -----------------------------------------------------
@dataclass
class ChildRun:
    wall_seconds: float
    returncode: int
    run_dir: Path
    memory: MemoryWatch

    def metrics(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads((self.run_dir / "metrics.json").read_text("utf-8"))
        return payload


def run_simulation_child(
    overrides: dict[str, Any],
    hospitals: int,
    cpus_per_hospital: float,
    run_dir: Path,
    client: str = "fedclinic",
    log_file: Path | None = None,
    watch_memory: bool = False,
    on_start: Callable[[int], None] | None = None,
) -> ChildRun:
    """Run one Flower simulation in a fresh Python process (Ray and TF state stay there)."""
    spec = {
        "overrides": {**overrides, "run-dir": str(run_dir)},
        "hospitals": hospitals,
        "cpus_per_hospital": cpus_per_hospital,
        "client": client,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_file or run_dir / "simulation.log"
    started = time.monotonic()
    with log_path.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._simulate", json.dumps(spec)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        watch = MemoryWatch(process.pid, run_dir / "metrics.json")
        if watch_memory:
            watch.start()
        if on_start is not None:
            on_start(process.pid)
        returncode = process.wait()
        watch.stop()
    wall = time.monotonic() - started
    if returncode != 0:
        tail = log_path.read_text("utf-8", errors="replace").splitlines()[-20:]
        raise RuntimeError(
            f"simulation failed with exit code {returncode}; log {log_path}:\n" + "\n".join(tail)
        )
    return ChildRun(wall, returncode, run_dir, watch)

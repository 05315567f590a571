"""Running a sweep's runs: each one a ``python -m simulations`` child process, several at once,
skipping those whose ``metrics.json`` says ``completed``.

A run that did not complete (failed, killed, never started) starts again from scratch: its
directory is deleted first, so no checkpoint of the old attempt is resumed. Each run
directory also holds ``sweep-overrides.toml`` (what the sweep asked for), ``sweep.log`` (the
child's output) and ``sweep-run.json`` (its exit code and wall seconds).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.files import atomic_path, write_json_atomic
from common.manifest import project_root
from simulations.sweep_file import PlannedRun

OVERRIDES_FILE = "sweep-overrides.toml"
LOG_FILE = "sweep.log"
RUN_FILE = "sweep-run.json"
METRICS_FILE = "metrics.json"
COMPLETED = "completed"

# (run, its directory) -> the child's exit code; tests inject a fake one.
RunChild = Callable[[PlannedRun, Path], int]


@dataclass(frozen=True)
class RunOutcome:
    run: PlannedRun
    skipped: bool
    exit_code: int | None  # None when skipped


def toml_value(value: Any) -> str:
    """A run-config scalar as TOML (strings as JSON strings: a subset of TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return "inf" if value > 0 else "-inf" if value < 0 else "nan"
        return repr(value)
    return json.dumps(str(value))


def overrides_toml(overrides: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in overrides.items())


def read_outcome(run_dir: Path) -> dict[str, Any]:
    """``metrics.json``'s outcome; ``{"status": "missing"}`` when there is no readable one."""
    try:
        payload = json.loads((run_dir / METRICS_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {"status": "missing"}
    outcome = payload.get("outcome") if isinstance(payload, dict) else None
    return dict(outcome) if isinstance(outcome, dict) else {"status": "missing"}


def is_completed(run_dir: Path) -> bool:
    return read_outcome(run_dir).get("status") == COMPLETED


def default_jobs(hospitals: int, cpus_per_hospital: float, cpus: int | None = None) -> int:
    """Runs at once: the cores ÷ the cores one run's hospitals reserve (at least 1)."""
    cores = cpus if cpus is not None else (os.cpu_count() or 1)
    per_run = min(cores, max(1, math.ceil(hospitals * cpus_per_hospital)))
    return max(1, cores // per_run)


def simulation_child(hospitals: int, cpus_per_hospital: float) -> RunChild:
    """The real runner: ``python -m simulations`` with the run's overrides as a TOML file."""

    def run_child(run: PlannedRun, run_dir: Path) -> int:
        settings = run_dir / OVERRIDES_FILE
        overrides = {**run.overrides, "run-dir": str(run_dir)}
        with atomic_path(settings) as tmp:
            tmp.write_text(overrides_toml(overrides), "utf-8")
        command = [
            sys.executable,
            "-m",
            "simulations",
            "--hospitals",
            str(hospitals),
            "--cpus-per-hospital",
            str(cpus_per_hospital),
            "--run-config",
            str(settings),
        ]
        path = os.pathsep.join(filter(None, [str(project_root()), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        with (run_dir / LOG_FILE).open("w", encoding="utf-8") as log:
            done = subprocess.run(
                command, cwd=project_root(), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return done.returncode

    return run_child


def run_all(
    runs: Sequence[PlannedRun],
    out: Path,
    run_child: RunChild,
    jobs: int,
    say: Callable[[str], None] = print,
) -> list[RunOutcome]:
    """Run every run not yet completed, ``jobs`` at once; outcomes in ``runs``' order."""
    lock = threading.Lock()
    pending = [run for run in runs if not is_completed(out / run.name)]
    to_run = {run.name for run in pending}
    say(
        f"sweep: {len(runs)} runs, {len(runs) - len(pending)} already completed, "
        f"{len(pending)} to run, {jobs} at once"
    )
    counter = iter(range(1, len(pending) + 1))

    def one(run: PlannedRun) -> RunOutcome:
        run_dir = out / run.name
        if run.name not in to_run:
            return RunOutcome(run=run, skipped=True, exit_code=None)
        if run_dir.exists():  # an earlier attempt that did not complete: start again
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        started = time.monotonic()
        code = run_child(run, run_dir)
        seconds = round(time.monotonic() - started, 3)
        write_json_atomic(run_dir / RUN_FILE, {"exit-code": code, "seconds": seconds})
        status = read_outcome(run_dir).get("status")
        with lock:
            say(f"[{next(counter)}/{len(pending)}] {run.name}: {status} in {seconds:.1f} s")
        return RunOutcome(run=run, skipped=False, exit_code=code)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, runs))

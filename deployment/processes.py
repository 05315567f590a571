"""Real processes for a one-machine deployment: started in their own process groups,
logged to files, and all torn down on exit, failure or Ctrl-C.

Flower starts helpers of its own (``flower-superexec``, ``flwr-serverapp``,
``flwr-clientapp``); the SuperLink's SuperExec even runs in a session of its own. Teardown
therefore signals every started process group *and* every descendant found under
``/proc`` before anything is killed, then waits, then sends SIGKILL to what is left.
The ``/proc`` readers here (:func:`proc_table`, :func:`process_tree`) also measure the
benchmarks' process trees.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from common.errors import FedclinicError

LOOPBACK = "127.0.0.1"
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class DeployError(FedclinicError):
    """A deployment process failed to start, was refused, or timed out."""


@dataclass(frozen=True)
class Started:
    """One process this supervisor started."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


class Supervisor:
    """Starts processes with one environment and stops all of them when the block ends."""

    def __init__(self, env: dict[str, str], log_dir: Path, grace: float = 5.0) -> None:
        self.env = env
        self.log_dir = log_dir
        self.grace = grace
        self.started: list[Started] = []

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self, name: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None
    ) -> Started:
        """Start ``argv`` in a new session (its own process group), output to ``<name>.log``.

        SIGINT and SIGTERM wait until the process is on the list, so an interrupt never
        leaves an untracked child; the child starts with the usual signal mask.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            with log.open("wb") as handle:
                popen = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env={**self.env, **(env or {})},
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, mask),
                )
            started = Started(name, popen, log)
            self.started.append(started)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return started

    def run(
        self,
        name: str,
        argv: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Started:
        """Start ``argv`` and wait for it to end; :class:`DeployError` after ``timeout``."""
        started = self.start(name, argv, cwd, env)
        try:
            started.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise DeployError(
                f"{name} did not finish within {timeout:.0f} s. See {started.log}"
            ) from error
        return started

    def stop_all(self) -> None:
        """SIGTERM every group and descendant, wait ``grace`` seconds, SIGKILL the rest.

        Groups of processes that already exited count too: a SuperNode that gives up
        leaves its SuperExec behind in its group. Returns once every target is gone (or
        after another ``grace`` seconds).
        """
        groups = {s.popen.pid for s in self.started}
        targets: set[int] = set()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            targets |= self._targets(groups, targets)
            for group in groups:
                _signal_group(group, sig)
            for pid in targets:
                _signal_pid(pid, sig)
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline and any(_exists(pid) for pid in targets):
                for started in self.started:
                    started.popen.poll()  # reap our own children
                time.sleep(0.1)
        for started in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored
                started.popen.wait(timeout=self.grace)

    def kill(self, started: Started) -> list[int]:
        """SIGKILL ``started``, its process group and every descendant (a crash: the
        SuperLink's SuperExec and ServerApp, a SuperNode's ClientApp die with it); return
        once all are gone (or after ``grace`` seconds). Returns the pids killed."""
        table = proc_table()
        group = started.popen.pid
        targets = {pid for pid, (_, pgid) in table.items() if pgid == group}
        targets |= {group, *descendants(group, table)}
        targets |= {child for pid in list(targets) for child in descendants(pid, table)}
        _signal_group(group, signal.SIGKILL)
        for pid in targets:
            _signal_pid(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            started.popen.wait(timeout=self.grace)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and any(_exists(pid) for pid in targets):
            time.sleep(0.1)
        return sorted(targets)

    def _targets(self, groups: set[int], known: set[int]) -> set[int]:
        """Members of our groups, our live children and every descendant of either."""
        table = proc_table()
        roots = {pid for pid, (_, pgid) in table.items() if pgid in groups}
        roots |= {s.popen.pid for s in self.started if s.alive()}
        roots |= {pid for pid in known if pid in table}
        return roots | {child for root in roots for child in descendants(root, table)}


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port the OS reports free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(started: Started, port: int, timeout: float, host: str = LOOPBACK) -> None:
    """Return once ``host:port`` accepts connections; fail if ``started`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not started.alive():
            raise DeployError(
                f"{started.name} exited with code {started.popen.returncode} before listening "
                f"on {host}:{port}. See {started.log}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise DeployError(f"{started.name} did not listen on {host}:{port} within {timeout:.0f} s.")


def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process in ``/proc`` (empty elsewhere)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(entry)
        if fields is not None:
            table[int(entry.parent.name)] = (int(fields[1]), int(fields[2]))
    return table


def process_state(pid: int) -> str | None:
    """``pid``'s state letter from ``/proc/PID/stat`` (``R``, ``S``, ``Z``, ...); None if gone."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return fields[0] if fields else None


def descendants(pid: int, table: dict[int, tuple[int, int]] | None = None) -> list[int]:
    """Every live descendant of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in (table if table is not None else proc_table()).items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def process_tree(root: int) -> list[int]:
    """``root`` followed by every live descendant."""
    return [root, *descendants(root)]


def _stat_fields(stat: Path) -> list[str] | None:
    """The fields of a ``/proc/PID/stat`` after the command name (which may hold spaces and
    parentheses): state, parent pid, process group, ...; None if the process is gone."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields if len(fields) >= 3 else None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return process_state(pid) != "Z"  # a zombie has exited; unreadable: count it as alive

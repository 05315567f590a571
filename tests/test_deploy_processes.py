"""The supervisor behind ``fedclinic deploy local``: every process it started, and every
process those started, is gone when its block ends — also after an error."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from simulations.processes import (
    DeployError,
    Supervisor,
    descendants,
    free_port,
    wait_for_port,
)

# A child that starts a grandchild in a session of its own (as the SuperLink starts its
# SuperExec), writes both PIDs, then sleeps.
TREE = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                              start_new_session=True)
open(sys.argv[1], "w").write(f"{os.getpid()} {grandchild.pid}")
time.sleep(120)
"""

# A leader that leaves a child behind in its group and exits (as a SuperNode that gives
# up leaves its SuperExec).
ORPHAN = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(sys.argv[1], "w").write(str(child.pid))
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except OSError:
        return False
    return state != "Z"


def _start_tree(supervisor: Supervisor, pids_file: Path) -> list[int]:
    supervisor.start("tree", [sys.executable, "-c", TREE, str(pids_file)], cwd=pids_file.parent)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if pids_file.exists() and pids_file.read_text():
            return [int(pid) for pid in pids_file.read_text().split()]
        time.sleep(0.05)
    raise AssertionError("the process tree did not start")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_stop_all_ends_children_and_detached_grandchildren(tmp_path: Path) -> None:
    # Prepare
    supervisor = Supervisor(dict(os.environ), tmp_path / "logs", grace=2.0)
    pids = _start_tree(supervisor, tmp_path / "pids")
    assert pids[1] in descendants(pids[0])

    # Execute
    supervisor.stop_all()

    # Assert
    assert [pid for pid in pids if _alive(pid)] == []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_processes_are_stopped_when_the_block_fails(tmp_path: Path) -> None:
    # Prepare
    pids: list[int] = []

    def fail_inside_the_block() -> None:
        with Supervisor(dict(os.environ), tmp_path / "logs", grace=2.0) as supervisor:
            pids.extend(_start_tree(supervisor, tmp_path / "pids"))
            raise RuntimeError("boom")

    # Execute
    with pytest.raises(RuntimeError, match="boom"):
        fail_inside_the_block()

    # Assert
    assert [pid for pid in pids if _alive(pid)] == []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_stop_all_ends_what_an_exited_leader_left_in_its_group(tmp_path: Path) -> None:
    # Prepare
    supervisor = Supervisor(dict(os.environ), tmp_path / "logs", grace=2.0)
    pid_file = tmp_path / "pid"
    leader = supervisor.start("leader", [sys.executable, "-c", ORPHAN, str(pid_file)], tmp_path)
    leader.popen.wait(timeout=20)
    orphan = int(pid_file.read_text())
    assert _alive(orphan)

    # Execute
    supervisor.stop_all()

    # Assert
    assert not _alive(orphan)


def test_output_goes_to_the_process_log(tmp_path: Path) -> None:
    with Supervisor(dict(os.environ), tmp_path / "logs") as supervisor:
        started = supervisor.start("hello", [sys.executable, "-c", "print('hi')"], cwd=tmp_path)
        started.popen.wait(timeout=20)

    assert started.log == tmp_path / "logs" / "hello.log"
    assert started.log_text() == "hi\n"


def test_wait_for_port_fails_when_the_process_exits_first(tmp_path: Path) -> None:
    # Prepare
    port = free_port()
    with Supervisor(dict(os.environ), tmp_path / "logs") as supervisor:
        started = supervisor.start("quitter", [sys.executable, "-c", "exit(3)"], cwd=tmp_path)

        # Execute
        with pytest.raises(DeployError) as error:
            wait_for_port(started, port, timeout=20)

    # Assert
    assert str(error.value) == (
        f"quitter exited with code 3 before listening on 127.0.0.1:{port}. "
        f"See {tmp_path / 'logs' / 'quitter.log'}"
    )


def test_wait_for_port_returns_once_listening(tmp_path: Path) -> None:
    # Prepare
    with socket.socket() as server, Supervisor(dict(os.environ), tmp_path / "l") as supervisor:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
        started = supervisor.start("sleeper", sleeper, cwd=tmp_path)

        # Execute / Assert: no exception
        wait_for_port(started, port, timeout=5)

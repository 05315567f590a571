"""The supervisor behind ``fedclinic deploy local``: every process it started, and every
process those started, is gone when its block ends — also after an error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployment.processes import (
    DeployError,
    Supervisor,
    descendants,
    free_port,
    proc_table,
    process_state,
    process_tree,
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
    return process_state(pid) not in (None, "Z")


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

        # Execute
        wait_for_port(started, port, timeout=5)

        # Assert: it returned because it connected, not because it gave up
        server.settimeout(1.0)
        connection, _ = server.accept()
        connection.close()


def test_wait_for_port_fails_when_nothing_listens(tmp_path: Path) -> None:
    # Prepare
    port = free_port()
    with Supervisor(dict(os.environ), tmp_path / "logs") as supervisor:
        sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
        started = supervisor.start("sleeper", sleeper, cwd=tmp_path)

        # Execute
        with pytest.raises(DeployError) as error:
            wait_for_port(started, port, timeout=1)

    # Assert
    assert str(error.value) == f"sleeper did not listen on 127.0.0.1:{port} within 1 s."


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_proc_table_knows_this_process_and_its_child(tmp_path: Path) -> None:
    # Prepare
    with Supervisor(dict(os.environ), tmp_path / "logs") as supervisor:
        sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
        child = supervisor.start("sleeper", sleeper, cwd=tmp_path).popen.pid

        # Execute
        table = proc_table()
        tree = process_tree(os.getpid())

        # Assert: the supervisor starts each process in a session (and group) of its own
        assert table[os.getpid()] == (os.getppid(), os.getpgrp())
        assert table[child] == (os.getpid(), child)
        assert tree[0] == os.getpid()
        assert child in tree
        assert process_state(child) in {"R", "S", "D"}


def test_process_state_of_a_process_that_is_gone() -> None:
    # Prepare
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )

    # Execute
    state = process_state(int(done.stdout))

    # Assert
    assert state is None

"""``Supervisor.kill``: a crash of one process and everything it started (the SuperLink
with its detached SuperExec and ServerApp), while the supervisor's other processes run on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployment.processes import Supervisor
from tests.test_deploy_processes import _alive, _start_tree


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_kill_ends_one_tree_and_leaves_the_others(tmp_path: Path) -> None:
    # Prepare: two trees, each a child with a grandchild in a session of its own
    with Supervisor(dict(os.environ), tmp_path / "logs", grace=2.0) as supervisor:
        doomed = _start_tree(supervisor, tmp_path / "doomed")
        spared = _start_tree(supervisor, tmp_path / "spared")

        # Execute
        killed = supervisor.kill(supervisor.started[0])

        # Assert
        assert set(doomed) <= set(killed)
        assert [pid for pid in doomed if _alive(pid)] == []
        assert [pid for pid in spared if _alive(pid)] == spared
        assert supervisor.started[0].popen.returncode == -9

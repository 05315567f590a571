"""`fedclinic run` against a real Flower simulation SuperLink on 127.0.0.1.

The SuperLink is the one `flwr run .` starts for local simulations (`--simulation`,
subprocess isolation), started here on a free port with its own `FLWR_HOME`, so every
process is ours to stop. One run fails (too few hospitals within `node-wait-timeout`: plain
`flwr run --stream` exits 0 there) and one tiny run completes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployment.processes import LOOPBACK, Supervisor, free_port, wait_for_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUN_TIMEOUT = 600.0  # seconds one `fedclinic run` may take on 2 shared cores
TINY = "model='cnn-small' num-server-rounds=1 synthetic-examples=40 local-epochs=1"
WAIT_MESSAGE = (
    "Only 2 of the 3 required hospitals connected within `node-wait-timeout` (3 s). "
    "Start more hospitals or lower `min-available-nodes` / `min-train-nodes` / "
    "`min-evaluate-nodes`."
)


def environment(flwr_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "RAY_preload_python_modules": "common.tf_preload",
        "CUDA_VISIBLE_DEVICES": "",
    }


@pytest.fixture(scope="module")
def superlink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A simulation SuperLink and a `flwr` connection `sim` to it; yields the environment."""
    work = tmp_path_factory.mktemp("run-cli")
    home = work / "flwr-home"
    home.mkdir()
    port = free_port()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "sim"\n\n'
        f'[superlink.sim]\naddress = "{LOOPBACK}:{port}"\ninsecure = true\n',
        encoding="utf-8",
    )
    env = environment(home)
    argv = [str(BIN / "flower-superlink"), "--insecure", "--simulation"]
    argv += ["--isolation", "subprocess", "--host", LOOPBACK, "--port", str(port)]
    argv += ["--database", str(work / "state.db")]
    with Supervisor(env, work / "logs") as supervisor:
        started = supervisor.start("superlink", argv, cwd=work)
        wait_for_port(started, port, timeout=60.0)
        yield env


def fedclinic_run(env: dict[str, str], run_config: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "cli.main", "run", str(ROOT), "sim"]
    argv += ["--run-config", run_config, "--federation-config", "num-supernodes=2"]
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def outcome(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["outcome"])


@pytest.mark.e2e
@pytest.mark.timeout(RUN_TIMEOUT + 120)
def test_node_wait_failure_exits_1_with_reason_and_directory(
    superlink: dict[str, str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    config = f"{TINY} min-available-nodes=3 node-wait-timeout=3.0 run-dir='{run_dir}'"

    completed = fedclinic_run(superlink, config)

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert completed.stderr.splitlines()[-2:] == [
        f"run failed: {WAIT_MESSAGE}",
        f"run directory: {run_dir}",
    ]
    assert "Successfully started run" in completed.stdout  # the log was streamed
    assert outcome(run_dir) == {"status": "failed", "message": WAIT_MESSAGE}


@pytest.mark.e2e
@pytest.mark.timeout(RUN_TIMEOUT + 120)
def test_completed_run_exits_0(superlink: dict[str, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    completed = fedclinic_run(superlink, f"{TINY} run-dir='{run_dir}'")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.splitlines()[-2:] == ["run completed", f"run directory: {run_dir}"]
    assert outcome(run_dir)["status"] == "completed"
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert [r["round"] for r in metrics["rounds"]] == [1]
    assert len(metrics["rounds"][0]["nodes"]["train"]) == 2

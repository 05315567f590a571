"""A simulation attached to a real Ray cluster, started with docs/scaling.md's own commands.

The head (no CPUs for hospitals) and one worker node (2 CPUs) run on 127.0.0.1 from a
private temporary directory (``RAY_TMPDIR``), each as ``ray start --block`` under a
``Supervisor``: teardown stops exactly these processes and their descendants (``ray stop``
would stop every Ray on the machine). The oracle is the cluster's own record (Ray's GCS):
the simulation's driver job and its ``ClientAppActor`` actors, on the worker node; a
simulation that started a Ray of its own leaves no job there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployment.processes import LOOPBACK, Started, Supervisor, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "scaling.md"
CLUSTER_TIMEOUT = 120.0  # both nodes up and registered
RUN_TIMEOUT = 240.0
WORKER_CPUS = 2
# Run by a Python connected to the cluster: what the GCS recorded, as JSON.
CLUSTER_RECORD = """
import json, sys, ray
from ray._private import state
ray.init(address=sys.argv[1], include_dashboard=False, logging_level="ERROR", log_to_driver=False)
me = ray.get_runtime_context().get_job_id()
print(json.dumps({
    "nodes": [{"id": n["NodeID"], "head": "node:__internal_head__" in n["Resources"]}
              for n in ray.nodes() if n["Alive"]],
    "jobs": [{"id": j["JobID"], "dead": j["IsDead"]} for j in state.jobs() if j["JobID"] != me],
    "actors": [{"class": a["ActorClassName"], "job": a["JobID"], "node": a["Address"]["NodeID"]}
               for a in state.actors().values()],
}))
"""


def doc_command(prefix: str) -> str:
    """The one line of a ```bash block in docs/scaling.md that starts with ``prefix``."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    lines = [line for block in blocks for line in block.splitlines() if line.startswith(prefix)]
    if len(lines) != 1:
        raise LookupError(f"{DOC} has {len(lines)} commands starting with {prefix!r}")
    return lines[0]


def shell(command: str) -> list[str]:
    return ["bash", "-c", command]


def cluster_env(tmp: Path, port: int) -> dict[str, str]:
    """The doc's `export`s with this test's values; the venv first on PATH (`activate`)."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_TMPDIR": str(tmp),  # sessions, sockets and `ray_current_cluster` stay in here
        "RAY_ADDRESS": "",
        "FLWR_HOME": str(tmp / "flwr"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "RAY_preload_python_modules": "common.tf_preload",
        "HEAD_IP": LOOPBACK,
        "RAY_PORT": str(port),
        "HEAD_CPUS": "0",
        "WORKER_CPUS": str(WORKER_CPUS),
    }


def wait_for_nodes(supervisor: Supervisor, nodes: list[Started], count: int) -> None:
    """Poll the doc's `ray status` until ``count`` nodes are active; fail with the logs."""
    deadline = time.monotonic() + CLUSTER_TIMEOUT
    status = ""
    while time.monotonic() < deadline:
        dead = [node for node in nodes if not node.alive()]
        if dead:
            pytest.fail(f"{dead[0].name} ended:\n{dead[0].log_text()[-3000:]}")
        checked = supervisor.run("status", shell(doc_command("ray status")), ROOT, timeout=60)
        status = checked.log_text()
        if len(re.findall(r"^\s*1 node_", status, flags=re.M)) == count:
            return
        time.sleep(3)
    pytest.fail(f"{count} Ray nodes not active within {CLUSTER_TIMEOUT:.0f} s:\n{status}")


@pytest.fixture
def cluster() -> Iterator[tuple[Supervisor, dict[str, str], Path]]:
    """A head and a worker node from docs/scaling.md; both stopped, whatever happens."""
    # Short path: Ray's Unix sockets live under it (at most 107 bytes).
    tmp = Path(tempfile.mkdtemp(prefix="fcr-", dir="/tmp"))
    env = cluster_env(tmp, free_port())
    try:
        with Supervisor(env, tmp / "logs", grace=10.0) as supervisor:
            head = supervisor.start("head", shell(doc_command("ray start --head")), ROOT)
            worker = supervisor.start(
                "worker", shell(doc_command("ray start --block --address")), ROOT
            )
            wait_for_nodes(supervisor, [head, worker], count=2)
            yield supervisor, env, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cluster_record(env: dict[str, str]) -> dict[str, Any]:
    address = f"{env['HEAD_IP']}:{env['RAY_PORT']}"
    completed = subprocess.run(
        [sys.executable, "-c", CLUSTER_RECORD, address],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    record: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return record


def test_simulation_runs_its_hospitals_on_the_attached_cluster(
    cluster: tuple[Supervisor, dict[str, str], Path],
) -> None:
    # Prepare
    supervisor, env, tmp = cluster
    run_dir = tmp / "run"
    command = f"{doc_command('python -m simulations')} --run-config \"run-dir='{run_dir}'\""

    # Execute
    run = supervisor.run("simulation", shell(command), ROOT, timeout=RUN_TIMEOUT)
    record = cluster_record(env)

    # Assert
    assert run.popen.returncode == 0, run.log_text()[-5000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["outcome"]["status"] == "completed"
    assert [r["round"] for r in metrics["rounds"]] == [1]
    workers = [node["id"] for node in record["nodes"] if not node["head"]]
    assert len(workers) == 1, record["nodes"]
    assert [job["dead"] for job in record["jobs"]] == [True], record["jobs"]
    hospitals = [a for a in record["actors"] if a["class"] == "ClientAppActor"]
    # The worker's 2 CPUs / 1 CPU per hospital: 2 actors of the simulation's job, there.
    assert (
        hospitals
        == [{"class": "ClientAppActor", "job": record["jobs"][0]["id"], "node": workers[0]}]
        * WORKER_CPUS
    )

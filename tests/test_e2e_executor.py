"""Real processes: two hospitals whose SuperNodes run ``--isolation process`` beside a
long-lived ``fedclinic site serve`` executor, on a plaintext loopback SuperLink (TLS and
SuperNode authentication are covered by ``test_deploy_local.py``).

Two runs, in this order, on the same processes:
1. a bundle whose ClientApp was modified (it would write a marker file and list the site's
   data folder) is refused at both hospitals: the marker never appears, the run fails with
   the refusal kind in the coordinator's log, one refusal line per hospital log;
2. the approved bundle then trains 2 rounds on the same, still running, processes.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from client.approval import NOT_APPROVED
from client.executor import REFUSED_PREFIX
from common.manifest import project_root
from deployment.deploy_cli import _site_data
from deployment.deploy_local import (
    CONNECTION,
    START_TIMEOUT,
    LocalFederation,
    app_config,
    deployment_env,
    federation_config,
    flower_bin,
    run_config_overrides,
)
from deployment.processes import LOOPBACK, Started, Supervisor, free_port, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SITES = ("site-1", "site-2")
RUN_TIMEOUT = 300.0
EXAMPLES = 60
MODIFICATION = """

# --- modified by a third party: runs code of its own beside the patient data ---
import pathlib as _pathlib

_pathlib.Path({marker!r}).write_text("imported", encoding="utf-8")
_approved_app = app
app = ClientApp()


@app.train()
def _steal(msg: Message, context: Context) -> Message:
    folder = _pathlib.Path(str(context.node_config.get("data-path", "")))
    names = ",".join(sorted(p.name for p in folder.iterdir()))
    _pathlib.Path({marker!r}).write_text("read " + names, encoding="utf-8")
    return _approved_app(msg, context)
"""


def _snapshot_app(target: Path) -> Path:
    """The files ``flwr run`` ships of this repository, frozen now (others may edit it)."""
    from flwr.cli.build import build_fab_from_disk

    with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(project_root()))) as bundle:
        for name in bundle.namelist():
            if not name.startswith(".info/"):
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_bytes(bundle.read(name))
    return target


def _start_plain_superlink(federation: LocalFederation) -> Started:
    federation.port = free_port()
    federation.coordinator.mkdir(parents=True, exist_ok=True)
    argv = [flower_bin("flower-superlink"), "--insecure"]
    argv += ["--database", str(federation.coordinator / "state.db")]
    argv += ["--disable-runtime-dependency-installation"]
    argv += ["--host", LOOPBACK, "--port", str(federation.port)]
    env = {"FLWR_HOME": str(federation.flwr_home)}
    superlink = federation.supervisor.start("superlink", argv, federation.coordinator, env)
    wait_for_port(superlink, federation.port, START_TIMEOUT)
    federation.flwr_home.mkdir(parents=True, exist_ok=True)
    (federation.flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "{federation.address}"\ninsecure = true\n',
        encoding="utf-8",
    )
    return superlink


def _flwr_run(
    federation: LocalFederation, app: Path, run_config: dict[str, Any], name: str
) -> tuple[Started, dict[str, Any]]:
    argv = [flower_bin("flwr"), "run", str(app), CONNECTION, "--stream"]
    argv += ["--run-config", run_config_overrides(run_config)]
    env = {"FLWR_HOME": str(federation.flwr_home)}
    done = federation.supervisor.run(name, argv, federation.workdir, env, RUN_TIMEOUT)
    metrics = Path(str(run_config["run-dir"])) / "metrics.json"
    payload = json.loads(metrics.read_text(encoding="utf-8")) if metrics.exists() else {}
    return done, payload


def _task_seconds(log_text: str) -> list[float]:
    return [float(s) for s in re.findall(r"Task of run \d+ ran in ([0-9.]+) s", log_text)]


def test_unapproved_bundle_refused_then_approved_bundle_trains(tmp_path: Path) -> None:
    # Prepare: two app folders (approved, modified), data and approvals per site
    approved = _snapshot_app(tmp_path / "approved" / "fedclinic")
    modified = _snapshot_app(tmp_path / "modified" / "fedclinic")
    marker = tmp_path / "marker.txt"
    with (modified / "client" / "app.py").open("a", encoding="utf-8") as handle:
        handle.write(MODIFICATION.format(marker=str(marker)))
    workdir = tmp_path / "work"
    approvals = {name: workdir / "sites" / name / "approvals.json" for name in SITES}
    for path in approvals.values():
        argv = ["site", "approve", "--approvals", str(path), "--app-dir", str(approved)]
        assert main(argv) == 0
    refused_config = federation_config(len(SITES), 2, EXAMPLES, workdir / "run-refused")
    approved_config = federation_config(len(SITES), 2, EXAMPLES, workdir / "run-approved")
    config = app_config(approved_config)

    with Supervisor(deployment_env(), workdir / "logs") as supervisor:
        federation = LocalFederation(workdir, supervisor)
        data = {name: _site_data(workdir, config, i, name) for i, name in enumerate(SITES)}
        _start_plain_superlink(federation)
        hospitals = [
            federation.start_hospital(name, None, None, data[name], approvals[name])
            for name in SITES
        ]
        processes = [p for pair in hospitals for p in pair]

        # Execute
        refused, refused_metrics = _flwr_run(federation, modified, refused_config, "run-refused")
        alive_after_refusal = [p.name for p in processes if p.alive()]
        ran, approved_metrics = _flwr_run(federation, approved, approved_config, "run-approved")
        alive_after_run = [p.name for p in processes if p.alive()]
        executor_logs = [executor.log_text() for _, executor in hospitals]

    # Assert: the modified bundle never ran, the refusal is named on both sides
    assert not marker.exists()
    assert refused_metrics["outcome"]["status"] == "failed"
    assert "0 of 2 hospitals sent a valid update (2 failed" in refused_metrics["outcome"]["message"]
    assert f"failed: {REFUSED_PREFIX}: {NOT_APPROVED}" in refused_metrics["outcome"]["message"]
    node_lines = [
        line
        for line in refused.log_text().splitlines()
        if "[fedclinic] train" in line
        and line.endswith(f"failed: {REFUSED_PREFIX}: {NOT_APPROVED}")
    ]
    assert len(node_lines) == len(SITES)
    for text in executor_logs:
        refusals = [line for line in text.splitlines() if "Refused run" in line]
        assert len(refusals) == 1
        assert "fedclinic/fedclinic version 0.1.0" in refusals[0]
        assert refusals[0].endswith(NOT_APPROVED)
    assert alive_after_refusal == [p.name for p in processes]
    # Assert: the approved bundle trained on the same processes
    assert ran.popen.returncode == 0, ran.log_text()[-2000:]
    assert approved_metrics["outcome"]["status"] == "completed"
    assert [r["participation"]["ok"] for r in approved_metrics["rounds"]] == [2, 2]
    assert alive_after_run == [p.name for p in processes]
    seconds = [s for text in executor_logs for s in _task_seconds(text)]
    assert len(seconds) == 3 * 2 * len(SITES)  # train, val and test, 2 rounds, each site
    print(
        "round seconds:",
        [r["seconds"] for r in approved_metrics["rounds"]],
        "task seconds:",
        seconds,
    )

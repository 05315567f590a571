"""Restart without loss, with real processes on 127.0.0.1 (TLS, SuperNode auth, database).

- The SuperLink (with its SuperExec and ServerApp) is killed with SIGKILL after round 1's
  checkpoint is on disk, restarted with the same ``--database``, port and certificates; the
  SuperNodes reconnect by themselves and ``flwr run`` with ``resume=true`` and the same
  ``run-dir`` finishes: every round in ``metrics.json`` once, the rounds before the kill
  unchanged.
- One of three SuperNodes (with its ClientApp) is killed after it received round 2's
  training message; with ``min-train-nodes = 2`` the round completes with the other two,
  the killed node is recorded as failed or timed out, and the run finishes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deployment.deploy_local import (
    CONNECTION,
    LocalFederation,
    app_config,
    deployment_env,
    federation_config,
    flower_bin,
)
from deployment.pki import SiteKeys
from deployment.processes import Started, Supervisor, descendants, proc_table

pytestmark = pytest.mark.e2e
ROUNDS, EXAMPLES = 3, 30
WAIT = 150.0  # seconds for one awaited event (a checkpoint, a reconnect, a message)
RUN_TIMEOUT = 200.0  # seconds for the resumed run / the run that loses a node
TEST_TIMEOUT = 420  # pytest-timeout: above every bounded wait above, so they fail first


@dataclass
class Federation:
    """A started SuperLink and SuperNodes; everything is stopped when the test ends."""

    local: LocalFederation
    superlink: Started
    nodes: dict[str, Started]
    node_ids: dict[str, int]
    run_dir: Path


@pytest.fixture
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], Federation]]:
    """``start(sites)``: PKI, data, SuperLink, registered and connected SuperNodes."""
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    with Supervisor(deployment_env(), tmp_path / "logs") as supervisor:

        def started(sites: int) -> Federation:
            local = LocalFederation(tmp_path, supervisor)
            keys = local.create_pki([f"site-{i + 1}" for i in range(sites)])
            superlink = local.start_superlink()
            node_ids = {k.name: local.register(k) for k in keys}
            nodes = {k.name: _start_site(local, k, i) for i, k in enumerate(keys)}
            _wait_until_online(local, set(node_ids.values()))
            return Federation(local, superlink, nodes, node_ids, tmp_path / "run")

        yield started


def _start_site(local: LocalFederation, keys: SiteKeys, hospital: int) -> Started:
    from common.data.folder import write_image_folder
    from common.data.synthetic import synthetic_site

    config = app_config({"synthetic-examples": EXAMPLES})
    spec = config.data.spec()
    site = synthetic_site(config.seed, hospital, EXAMPLES, spec)
    data = local.workdir / "sites" / keys.name / "data"
    write_image_folder(data, {"train": site.train, "test": site.test}, spec.class_names)
    return local.start_supernode(keys.name, keys.private_key, local.pki.ca_cert, data)


def _online_nodes(local: LocalFederation) -> set[int]:
    """Node IDs ``flwr supernode ls`` lists as online (the runbook's check)."""
    argv = [flower_bin("flwr"), "supernode", "ls", CONNECTION, "--format", "json"]
    done = local.supervisor.run("supernode-ls", argv, local.workdir, _cli_env(local), 60)
    out = done.log_text()
    try:
        listed = json.JSONDecoder().raw_decode(out[out.index("{") :])[0]["nodes"]
    except (ValueError, KeyError):
        return set()
    return {int(n["node-id"]) for n in listed if n.get("status") == "online"}


def _cli_env(local: LocalFederation) -> dict[str, str]:
    return {"FLWR_HOME": str(local.flwr_home)}


def _wait_until_online(local: LocalFederation, node_ids: set[int]) -> None:
    _wait_for(lambda: _online_nodes(local) >= node_ids, f"nodes {sorted(node_ids)} online")


def _wait_for(condition: Callable[[], bool], what: str, watch: Sequence[Started] = ()) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if dead := [s for s in watch if not s.alive()]:
            raise AssertionError(f"{dead[0].name} stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {WAIT:.0f} s")
        time.sleep(0.5)


def _metrics(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")))


def _recorded(run_dir: Path) -> list[int]:
    try:
        return [int(r["round"]) for r in _metrics(run_dir)["rounds"]]
    except (OSError, ValueError, KeyError):
        return []


def _commands(pids: list[int]) -> list[str]:
    """The command lines of ``pids`` (those still readable)."""
    found = []
    for pid in pids:
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def _run_config(federation: Federation, **overrides: Any) -> dict[str, Any]:
    """The local federation's run config, training only: one ClientApp process per node
    and round (evaluating would start two more, each importing TensorFlow)."""
    sites = len(federation.nodes)
    config = federation_config(sites, ROUNDS, EXAMPLES, federation.run_dir)
    return {**config, "fraction-evaluate": 0.0, **overrides}


@pytest.mark.timeout(TEST_TIMEOUT)
def test_superlink_restart_then_resume_records_every_round_once(
    start: Callable[[int], Federation],
) -> None:
    # Prepare: a run killed with its SuperLink (and ServerApp) once round 1 is checkpointed
    federation = start(2)
    local, run_dir = federation.local, federation.run_dir
    run_config = _run_config(federation)
    first = local.launch(run_config, name="flwr-run-1")
    checkpoint = run_dir / "checkpoints" / "round-00001.npz"
    _wait_for(
        lambda: checkpoint.is_file() and bool(_recorded(run_dir)),
        "checkpoint of round 1",
        watch=[first, federation.superlink, *federation.nodes.values()],
    )
    tree = _commands(descendants(federation.superlink.popen.pid, proc_table()))
    local.supervisor.kill(federation.superlink)
    local.supervisor.kill(first)
    before = _metrics(run_dir)
    done = [r["round"] for r in before["rounds"]]
    assert any("flwr-serverapp" in command for command in tree), tree
    assert done == list(range(1, len(done) + 1))
    assert 1 <= len(done) < ROUNDS  # killed before the last round
    assert before["outcome"] == {"status": "running"}

    # Execute: restart it like before, let the nodes reconnect, resume the run
    local.start_superlink(port=local.port, name="superlink-restarted")
    _wait_until_online(local, set(federation.node_ids.values()))
    resumed = local.run(
        {**run_config, "resume": True},
        RUN_TIMEOUT,
        watch=list(federation.nodes.values()),
        name="flwr-run-2",
    )

    # Assert
    after = _metrics(run_dir)
    assert [r["round"] for r in after["rounds"]] == list(range(1, ROUNDS + 1))
    assert after["rounds"][: len(done)] == before["rounds"]
    assert after["outcome"]["status"] == "completed"
    assert f"resuming after round {len(done)}" in resumed.log.read_text(encoding="utf-8")
    assert (run_dir / "model.keras").is_file()
    assert all(s.alive() for s in federation.nodes.values())  # they never restarted


@pytest.mark.timeout(TEST_TIMEOUT)
def test_supernode_killed_mid_round_the_others_complete_it(
    start: Callable[[int], Federation],
) -> None:
    # Prepare: 3 sites, 2 needed per round
    federation = start(3)
    local, run_dir = federation.local, federation.run_dir
    k_of_n = {"min-train-nodes": 2, "min-available-nodes": 2, "round-timeout": 120.0}
    run = local.launch(_run_config(federation, **k_of_n))
    victim = federation.nodes["site-3"]

    # Execute: kill site-3 (and its ClientApp) once it received round 2's training message
    _wait_for(
        lambda: victim.log_text().count("Receiving: train message") >= 2,
        "round-2 train message at site-3",
        watch=[run, *federation.nodes.values()],
    )
    local.supervisor.kill(victim)
    deadline = time.monotonic() + RUN_TIMEOUT
    while run.alive() and time.monotonic() < deadline:
        time.sleep(0.5)

    # Assert
    assert run.popen.poll() == 0, run.log_text()[-3000:]
    final = _metrics(run_dir)
    assert [r["round"] for r in final["rounds"]] == list(range(1, ROUNDS + 1))
    assert final["outcome"]["status"] == "completed"
    killed = str(federation.node_ids["site-3"])
    round_2 = final["rounds"][1]["nodes"]["train"]
    # failed: the SuperLink answers for a node without heartbeats; timeout: `round-timeout`
    assert round_2[killed]["status"] in {"failed", "timeout"}, round_2[killed]
    assert round_2[killed]["name"] == "site-3"  # recorded under the dead node, by name
    counts = {k: final["rounds"][1]["participation"][k] for k in ("ok", "failed", "timeout")}
    assert counts["ok"] == 2
    assert counts["failed"] + counts["timeout"] == 1
    others = {node: o["status"] for node, o in round_2.items() if node != killed}
    assert others == {str(federation.node_ids[s]): "ok" for s in ("site-1", "site-2")}
    assert killed not in final["rounds"][2]["nodes"]["train"]

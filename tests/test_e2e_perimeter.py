"""The closed perimeter with real processes: nginx in front of a loopback SuperLink.

One federation serves every assertion: a SuperLink (TLS, SuperNode authentication, a
database) on 127.0.0.1, nginx on another free port with the federation's certificate, and
two hospital SuperNodes (keys made at the hospital) that know only nginx's address train a
round. Then an outsider with the federation's CA certificate and network access to nginx
tries every action of the trust-boundary audit (issue 9): each is refused, while the
operator on the coordinator's loopback still lists the run and both nodes.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.keys import generate_site_key
from common.data.folder import write_image_folder
from common.data.synthetic import synthetic_site
from common.manifest import project_root
from deployment.deploy_local import (
    CONNECTION,
    LocalFederation,
    RunResult,
    app_config,
    deployment_env,
    federation_config,
    flower_bin,
)
from deployment.perimeter import nginx_site, start_nginx
from deployment.processes import LOOPBACK, Started, Supervisor, free_port

SITES = ("st-marys", "city-general")
ROUNDS = 1
EXAMPLES = 40
RUN_TIMEOUT = 150.0
CLI_TIMEOUT = 60.0
OUTSIDER = "outsider"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]


class BehindNginx(LocalFederation):
    """SuperNodes dial ``front`` (nginx) once it is set; the operator's ``flwr`` connection,
    written when the SuperLink starts, stays on the SuperLink's loopback port."""

    front = ""

    @property
    def address(self) -> str:
        return self.front or super().address


@dataclass(frozen=True)
class Perimeter:
    workdir: Path
    federation: BehindNginx
    nginx: Started
    nginx_port: int
    node_ids: dict[str, int]
    nodes: list[Started]
    result: RunResult
    nginx_log: Path


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str
    seconds: float


@pytest.fixture(scope="module")
def perimeter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Perimeter]:
    workdir = tmp_path_factory.mktemp("perimeter").resolve()
    run_config = federation_config(len(SITES), ROUNDS, EXAMPLES, workdir / "run")
    with Supervisor(deployment_env(), workdir / "logs") as supervisor:
        federation = BehindNginx(workdir, supervisor)
        keys = federation.create_pki(list(SITES))  # keys made at each hospital
        federation.start_superlink()
        node_ids = {k.name: federation.register(k) for k in keys}
        nginx_port = free_port()
        site = nginx_site(federation.pki.root, f"{LOOPBACK}:{nginx_port}", federation.address)
        nginx = start_nginx(supervisor, site, workdir / "nginx")
        federation.front = f"{LOOPBACK}:{nginx_port}"
        nodes = [
            federation.start_supernode(
                k.name, k.private_key, federation.pki.ca_cert, _site_data(workdir, run_config, i)
            )
            for i, k in enumerate(keys)
        ]
        result = federation.run(run_config, RUN_TIMEOUT, watch=[*nodes, nginx])
        yield Perimeter(
            workdir,
            federation,
            nginx,
            nginx_port,
            node_ids,
            nodes,
            result,
            workdir / "nginx" / "access.log",
        )


@pytest.fixture(scope="module")
def outsider(perimeter: Perimeter, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every ``flwr`` action of the audit, by someone who reaches only nginx's port."""
    home = tmp_path_factory.mktemp("outsider-home")
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{OUTSIDER}"\n\n[superlink.{OUTSIDER}]\n'
        f'address = "{LOOPBACK}:{perimeter.nginx_port}"\n'
        f'root-certificates = "{perimeter.federation.pki.ca_cert}"\n',
        encoding="utf-8",
    )
    own = generate_site_key(tmp_path_factory.mktemp("outsider-keys"), OUTSIDER)
    run_id = _operator_runs(perimeter)[0]["run-id"]
    victim = perimeter.node_ids[SITES[0]]
    actions = {
        "register": ["supernode", "register", str(own.public_key), OUTSIDER],
        "ls": ["ls", OUTSIDER],
        "supernode ls": ["supernode", "ls", OUTSIDER],
        "log": ["log", str(run_id), OUTSIDER, "--show"],
        "run": ["run", str(project_root()), OUTSIDER, "--run-config", "num-server-rounds=1"],
        "unregister": ["supernode", "unregister", str(victim), OUTSIDER],
    }
    return {name: _flwr(argv, home, perimeter.workdir) for name, argv in actions.items()}


def test_hospitals_train_through_nginx(perimeter: Perimeter) -> None:
    # Assert: every round trained both sites, and their Fleet calls went through nginx.
    metrics = json.loads((perimeter.result.run_dir / "metrics.json").read_text())
    assert metrics["outcome"]["status"] == "completed"
    assert len(metrics["rounds"]) == ROUNDS
    for round_ in metrics["rounds"]:
        statuses = [node["status"] for node in round_["nodes"]["train"].values()]
        assert statuses == ["ok"] * len(SITES)
    forwarded = _access_lines(perimeter.nginx_log, "POST /v1/fleet/push-messages ")
    codes = [line.split('"')[2].split()[0] for line in forwarded]
    assert codes == ["200"] * len(forwarded)
    assert len(forwarded) >= 2 * len(SITES) * ROUNDS  # a train and an evaluate reply each
    added = _nginx_added_seconds(perimeter.nginx_log)
    print(
        f"\nthrough nginx: flwr run {perimeter.result.seconds:.1f} s, rounds "
        + ", ".join(f"{s:.1f}" for s in perimeter.result.round_seconds)
        + f" s; nginx added {1000 * max(added):.1f} ms at most, "
        f"{1000 * sum(added) / len(added):.2f} ms on average to {len(added)} Fleet calls"
    )


# action -> the Control API endpoint its refused request names
REFUSED_ACTIONS = (
    ("register", "register-node"),
    ("ls", "list-runs"),
    ("supernode ls", "list-nodes"),
    ("log", "stream-logs"),
    ("run", "start-run"),
    ("unregister", "unregister-node"),
)


@pytest.mark.parametrize(("action", "endpoint"), REFUSED_ACTIONS)
def test_outsider_flwr_action_is_refused(
    outsider: dict[str, Outcome], perimeter: Perimeter, action: str, endpoint: str
) -> None:
    # Act: done by the fixture; Assert: failure naming nginx's 404 for the Control API call.
    outcome = outsider[action]
    assert outcome.returncode != 0, outcome.output
    flat = " ".join(outcome.output.replace("│", " ").split())
    assert "404 Not Found" in flat
    assert f"https://{LOOPBACK}:{perimeter.nginx_port}/v1/control/{endpoint}" in flat


# (method, path, status): everything but POST to a Fleet endpoint is refused by nginx
REFUSED_REQUESTS = (
    ("GET", "/", 404),
    ("GET", "/docs", 404),
    ("GET", "/openapi.json", 404),
    ("GET", "/health", 404),
    ("POST", "/v1/control/list-runs", 404),
    ("POST", "/v1/control/list-nodes", 404),
    ("POST", "/v1/control/register-node", 404),
    ("POST", "/v1/control/start-run", 404),
    ("POST", "/v1/runtime/acquire-task", 404),
    ("POST", "/v1/runtime/pull-task-input", 404),
    ("POST", "/v1/fleet/../control/list-runs", 404),
    ("POST", "/v1/fleet/%2e%2e/control/list-runs", 404),
    ("POST", "/v1/fleet/..%2Fcontrol%2Flist-runs", 404),
    ("GET", "/v1/fleet/pull-messages", 403),
    ("POST", "/v1/fleet/register-node", 403),
    ("POST", "/v1/fleet/unregister-node", 403),
)


@pytest.mark.parametrize(("method", "path", "status"), REFUSED_REQUESTS)
def test_outsider_request_is_refused_by_nginx(
    perimeter: Perimeter, method: str, path: str, status: int
) -> None:
    # Act
    got, body = _request(perimeter, perimeter.nginx_port, method, path)
    # Assert: nginx's own page, so the SuperLink never saw the request
    assert (got, f"<title>{status} " in body) == (status, True)


def test_fleet_requests_reach_the_superlink(perimeter: Perimeter) -> None:
    # Act: a Fleet call without protobuf content; only the SuperLink answers 415 with JSON
    got, body = _request(perimeter, perimeter.nginx_port, "POST", "/v1/fleet/get-run")
    # Assert
    assert (got, json.loads(body)["detail"]) == (415, "Unsupported Content-Type.")


def test_the_superlink_itself_would_answer(perimeter: Perimeter) -> None:
    # Act: the refused paths exist behind nginx (what an outsider would get without it)
    got, body = _request(perimeter, perimeter.federation.port, "GET", "/openapi.json")
    # Assert
    assert got == 200
    assert "/v1/control/start-run" in json.loads(body)["paths"]


def test_plain_http_is_refused(perimeter: Perimeter) -> None:
    # Act
    connection = http.client.HTTPConnection(LOOPBACK, perimeter.nginx_port, timeout=10)
    try:
        connection.request("GET", "/docs")
        got = connection.getresponse().status
    finally:
        connection.close()
    # Assert: nginx's "plain HTTP request was sent to HTTPS port"
    assert got == 400


def test_operator_on_loopback_still_works(
    perimeter: Perimeter, outsider: dict[str, Outcome]
) -> None:
    # Act: after the outsider's register/unregister/run attempts
    runs = _operator_runs(perimeter)
    nodes = _operator_json(perimeter, ["supernode", "ls"])["nodes"]
    # Assert: one run (the outsider's never started), both hospitals, no third key
    assert [run["status"] for run in runs] == ["finished:completed"]
    assert sorted(int(node["node-id"]) for node in nodes) == sorted(perimeter.node_ids.values())
    assert [node["status"] for node in nodes] == ["online"] * len(SITES)
    assert all(node.alive() for node in perimeter.nodes)
    print(
        "\noutsider flwr calls (s): "
        + ", ".join(f"{name} {o.seconds:.1f}" for name, o in outsider.items())
    )


def _site_data(workdir: Path, run_config: dict[str, Any], hospital: int) -> Path:
    config = app_config(run_config)
    spec = config.data.spec()
    site = synthetic_site(config.seed, hospital, config.data.synthetic_examples, spec)
    root = workdir / "sites" / SITES[hospital] / "data"
    write_image_folder(root, {"train": site.train, "test": site.test}, spec.class_names)
    return root


def _flwr(argv: list[str], home: Path, cwd: Path) -> Outcome:
    env = {**deployment_env(), "FLWR_HOME": str(home), "COLUMNS": "200"}
    started = time.monotonic()
    done = subprocess.run(
        [flower_bin("flwr"), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    return Outcome(done.returncode, done.stdout + done.stderr, time.monotonic() - started)


def _operator_json(perimeter: Perimeter, argv: list[str]) -> dict[str, Any]:
    outcome = _flwr(
        [*argv, CONNECTION, "--format", "json"],
        perimeter.federation.flwr_home,
        perimeter.workdir,
    )
    payload: dict[str, Any] = json.loads(outcome.output[outcome.output.index("{") :])
    assert payload["success"], outcome.output
    return payload


def _operator_runs(perimeter: Perimeter) -> list[dict[str, Any]]:
    return list(_operator_json(perimeter, ["ls"])["runs"])


def _request(perimeter: Perimeter, port: int, method: str, path: str) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(perimeter.federation.pki.ca_cert))
    connection = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=10)
    try:
        connection.request(method, path, body=b"" if method == "POST" else None)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", errors="replace")
    finally:
        connection.close()


def _access_lines(log: Path, needle: str) -> list[str]:
    return [line for line in log.read_text(encoding="utf-8").splitlines() if needle in line]


def _nginx_added_seconds(log: Path) -> list[float]:
    """Per forwarded Fleet call: nginx's request time minus the SuperLink's response time."""
    times = (
        re.search(r" rt=([0-9.]+) urt=([0-9.]+)$", line) for line in log.read_text().splitlines()
    )
    return [float(m[1]) - float(m[2]) for m in times if m is not None]

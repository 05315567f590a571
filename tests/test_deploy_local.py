"""A real deployment on 127.0.0.1: SuperLink (TLS, SuperNode auth, database), 3 sites.

One federation serves every assertion (each run costs a minute or more on 2 cores): the
3 registered sites complete 2 rounds while four intruders, started just before the run,
are refused and never take part.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cli.main import main
from client.keys import generate_site_key
from deployment.deploy_cli import Deployment, DeployOptions, deploy_local
from deployment.deploy_local import LocalFederation, run_config_overrides
from deployment.pki import init_pki
from deployment.processes import Started

SITES, ROUNDS = 3, 2
STARTUP_LIMIT = 300.0  # seconds until every SuperNode of `deploy local` has started


@dataclass(frozen=True)
class Intruder:
    """A SuperNode that must be refused, and the lines its log may show (one of them)."""

    name: str
    start: Callable[[LocalFederation], Started]
    refusals: tuple[str, ...]


def _unregistered(federation: LocalFederation) -> Started:
    keys = generate_site_key(federation.workdir / "intruder", "intruder")  # never registered
    return federation.start_supernode(
        "unregistered", keys.private_key, federation.pki.ca_cert, max_retries=1
    )


def _other_ca(federation: LocalFederation) -> Started:
    other = init_pki(federation.workdir / "other-pki")
    site_1 = federation.site_key("site-1")  # a registered key, the wrong CA
    return federation.start_supernode("other-ca", site_1, other.ca_cert, max_retries=1)


def _plaintext(federation: LocalFederation) -> Started:
    return federation.start_supernode("plaintext", None, None, max_retries=1)


def _plaintext_with_key(federation: LocalFederation) -> Started:
    site_1 = federation.site_key("site-1")
    return federation.start_supernode("plaintext-key", site_1, None, max_retries=1)


INTRUDERS = (
    Intruder("unregistered", _unregistered, ("Failed to activate SuperNode.",)),
    Intruder("other-ca", _other_ca, ("certificate verify failed: unable to get local issuer",)),
    # The TLS listener drops a plaintext request either before or after reading it.
    Intruder(
        "plaintext",
        _plaintext,
        ("Server disconnected without sending a response.", "Connection reset by peer"),
    ),
    Intruder(
        "plaintext-key",
        _plaintext_with_key,
        ("SuperNode authentication requires a secure TLS connection with the SuperLink.",),
    ),
)


def _start_intruders(federation: LocalFederation) -> list[Started]:
    return [intruder.start(federation) for intruder in INTRUDERS]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    workdir = tmp_path_factory.mktemp("deploy")
    options = DeployOptions(sites=SITES, rounds=ROUNDS, examples=30, workdir=workdir, timeout=420)
    with (workdir.parent / f"{workdir.name}.out").open("w") as out:
        return deploy_local(options, Console(file=out, width=200), before_run=_start_intruders)


def _rounds(deployment: Deployment) -> list[dict[str, Any]]:
    text = (deployment.result.run_dir / "metrics.json").read_text(encoding="utf-8")
    return list(json.loads(text)["rounds"])


@pytest.mark.e2e
def test_three_authenticated_sites_complete_two_rounds(deployment: Deployment) -> None:
    # Prepare
    registered = {str(node) for node in deployment.node_ids.values()}

    # Execute
    rounds = _rounds(deployment)

    # Assert
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        for stage in ("train", "evaluate"):
            outcomes = record["nodes"][stage]
            assert set(outcomes) == registered
            assert {o["status"] for o in outcomes.values()} == {"ok"}
    assert (deployment.result.run_dir / "model.keras").is_file()


@pytest.mark.e2e
@pytest.mark.parametrize("intruder", INTRUDERS, ids=[i.name for i in INTRUDERS])
def test_intruder_is_refused(deployment: Deployment, intruder: Intruder) -> None:
    # Prepare
    started = next(s for s in deployment.extra if s.name == f"supernode-{intruder.name}")

    # Execute: its exit code when the run had ended, before the supervisor stopped anything
    code = deployment.exit_codes_at_run_end[started.name]

    # Assert: it gave up by itself (None: still running; 3: Flower's exit on SIGTERM)
    assert code not in (None, 0, 3)
    assert any(refusal in started.log_text() for refusal in intruder.refusals)
    assert "SuperNode ID:" not in started.log_text()


def _processes_with_flwr_home_under(workdir: Path, settle: float = 10.0) -> list[str]:
    """Live processes whose FLWR_HOME lies in ``workdir``, after giving processes that were
    just killed up to ``settle`` seconds to leave the process table."""
    deadline = time.monotonic() + settle
    while (found := _flwr_processes_now(workdir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def _flwr_processes_now(workdir: Path) -> list[str]:
    """Live processes whose FLWR_HOME lies in ``workdir``: every Flower process started."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")
            command = (environ.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if any(v.startswith(f"FLWR_HOME={workdir}".encode()) for v in variables):
            found.append(f"{environ.parent.name}: {command.decode(errors='replace')[:200]}")
    return found


@pytest.mark.e2e
def test_every_process_is_stopped(deployment: Deployment) -> None:
    # Prepare
    workdir = deployment.result.run_dir.parent
    names = {started.name for started in deployment.processes}

    # Execute
    alive = _processes_with_flwr_home_under(workdir)

    # Assert
    assert {"superlink", "flwr-run", *(f"supernode-site-{i}" for i in (1, 2, 3))} <= names
    assert [s.name for s in deployment.processes if s.popen.poll() is None] == []
    assert alive == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"num-server-rounds": 2}, "num-server-rounds=2"),
        ({"model": "cnn-small", "seed": 1}, 'model="cnn-small" seed=1'),
        ({"run-dir": "/tmp/a b"}, 'run-dir="/tmp/a b"'),
        ({"learning-rate": 0.5}, "learning-rate=0.5"),
    ],
)
def test_run_config_overrides(values: dict[str, Any], expected: str) -> None:
    assert run_config_overrides(values) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sites", "0"], "Invalid value for `--sites`. Expected an integer ≥ 1. Received: 0"),
        (["--rounds", "0"], "Invalid value for `--rounds`. Expected an integer ≥ 1. Received: 0"),
        (
            ["--examples", "0"],
            "Invalid value for `--examples`. Expected an integer ≥ 1. Received: 0",
        ),
        (["--timeout", "0"], "Invalid value for `--timeout`. Expected a number > 0. Received: 0.0"),
    ],
)
def test_deploy_local_refuses_bad_options(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["deploy", "local", *argv])

    assert code == 1
    assert capsys.readouterr().err == f"error: {message}\n"


def test_deploy_local_refuses_a_used_workdir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    (tmp_path / "something").write_text("x")

    # Execute
    code = main(["deploy", "local", "--workdir", str(tmp_path)])

    # Assert
    assert code == 1
    expected = (
        "error: Invalid value for `--workdir`. Expected a new or empty directory. "
        f"Received: '{tmp_path}'\n"
    )
    assert capsys.readouterr().err == expected


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_every_process(tmp_path: Path, sig: signal.Signals) -> None:
    # Prepare
    workdir = tmp_path / "work"
    argv = [sys.executable, "-m", "cli.main", "deploy", "local", "--workdir", str(workdir)]
    command = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Bounded: a start-up that hangs is ended with SIGTERM (which also stops its processes),
    # so reading its output below cannot block for ever.
    watchdog = threading.Timer(STARTUP_LIMIT, command.terminate)
    watchdog.start()
    try:
        assert command.stdout is not None
        started = any("SuperNodes started" in line for line in command.stdout)
        watchdog.cancel()
        assert started, f"no SuperNodes within {STARTUP_LIMIT:.0f} s"

        # Execute
        command.send_signal(sig)
        _, err = command.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if command.poll() is None:
            command.terminate()
            try:
                command.wait(timeout=60)
            except subprocess.TimeoutExpired:
                command.kill()

    # Assert
    assert command.returncode == 130
    assert err.endswith("interrupted\n")
    assert _processes_with_flwr_home_under(workdir) == []


# -- `deploy local --perimeter`: one more federation (2 sites, 2 rounds, about a minute) --
PERIMETER_SITES, PERIMETER_ROUNDS = 2, 2


@dataclass(frozen=True)
class PerimeterRun:
    workdir: Path
    code: int
    output: str


@pytest.fixture(scope="module")
def perimeter_run(tmp_path_factory: pytest.TempPathFactory) -> PerimeterRun:
    workdir = tmp_path_factory.mktemp("perimeter") / "work"
    argv = ["deploy", "local", "--perimeter", "--workdir", str(workdir), "--examples", "30"]
    argv += ["--sites", str(PERIMETER_SITES), "--rounds", str(PERIMETER_ROUNDS)]
    argv += ["--timeout", "240"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(argv)
    return PerimeterRun(workdir.resolve(), code, out.getvalue())


@pytest.mark.e2e
@pytest.mark.timeout(420)
def test_perimeter_sites_train_every_round(perimeter_run: PerimeterRun) -> None:
    # Prepare
    metrics = perimeter_run.workdir / "run" / "metrics.json"
    assert perimeter_run.code == 0, perimeter_run.output[-3000:]

    # Execute
    rounds = json.loads(metrics.read_text(encoding="utf-8"))["rounds"]

    # Assert: both hospitals ok in both phases of both rounds
    assert [r["round"] for r in rounds] == list(range(1, PERIMETER_ROUNDS + 1))
    for record in rounds:
        for stage in ("train", "evaluate"):
            statuses = [o["status"] for o in record["nodes"][stage].values()]
            assert statuses == ["ok"] * PERIMETER_SITES


@pytest.mark.e2e
def test_perimeter_path_is_the_executor_behind_nginx(perimeter_run: PerimeterRun) -> None:
    # Prepare
    workdir = perimeter_run.workdir
    logs = workdir / "logs"
    nginx_conf = workdir / "nginx" / "nginx.conf"
    approvals = [workdir / "sites" / f"site-{i}" / "approvals.json" for i in (1, 2)]

    # Execute
    tasks = [
        (logs / f"executor-site-{i}.log").read_text(encoding="utf-8").count("Task of run")
        for i in (1, 2)
    ]
    fleet_calls = (workdir / "nginx" / "access.log").read_text(encoding="utf-8")

    # Assert: every message ran in the executors (train, validation and test evaluate per
    # round), the SuperNodes' Fleet calls went through nginx, and the command said where
    # things are
    assert tasks == [3 * PERIMETER_ROUNDS] * PERIMETER_SITES
    assert "POST /v1/fleet/push-messages" in fleet_calls
    for path in (nginx_conf, *approvals):
        assert path.is_file()
        assert str(path) in perimeter_run.output


@pytest.mark.e2e
def test_perimeter_pki_holds_no_private_site_key(perimeter_run: PerimeterRun) -> None:
    # Prepare
    pki = perimeter_run.workdir / "pki"
    site_keys = [
        (perimeter_run.workdir / "sites" / f"site-{i}" / "keys" / f"site-{i}.key").read_bytes()
        for i in (1, 2)
    ]

    # Execute
    pki_files = {
        p.relative_to(pki).as_posix(): p.read_bytes() for p in pki.rglob("*") if p.is_file()
    }

    # Assert: only the CA's and the SuperLink's keys; no site key's bytes anywhere in pki/
    assert sorted(n for n in pki_files if n.endswith(".key")) == [
        "ca-private/ca.key",
        "superlink/superlink.key",
    ]
    assert not any(key in data for key in site_keys for data in pki_files.values())


@pytest.mark.e2e
def test_perimeter_stops_every_process(perimeter_run: PerimeterRun) -> None:
    # Execute: Flower processes by FLWR_HOME, nginx by its config path
    alive = _processes_with_flwr_home_under(perimeter_run.workdir)
    nginx = _processes_mentioning(str(perimeter_run.workdir / "nginx"))

    # Assert
    assert alive == []
    assert nginx == []


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(f"{cmdline.parent.name}: {command[:200]}")
    return found

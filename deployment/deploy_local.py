"""A real deployment on one machine: a TLS SuperLink with SuperNode authentication, one
authenticated SuperNode per synthetic hospital, and a run launched with ``flwr run``.

The same commands as ``docs/deployment.md``, on 127.0.0.1 with free ports. Everything
lives under one work directory, kept after the run::

    pki/                 ca.crt, ca-private/, superlink/, sites/<name>.pub, sites.json
    coordinator/         the SuperLink's database and Flower home (``flwr`` connection)
    sites/<name>/data/   a synthetic image folder per hospital (``--data dicom``: DICOM
                         files and labels.csv); sites/<name>/flwr-home/
    sites/<name>/keys/   the hospital's SuperNode key, made there (``site keygen``)
    logs/                one log per process; run/ the run directory

With the perimeter (``deploy local --perimeter``) also::

    app/                       the app folder ``flwr run`` ships, frozen at start
    nginx/nginx.conf           nginx in front of the loopback SuperLink (Fleet API only)
    sites/<name>/approvals.json, superexec.secret   what the site's executor runs
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.keys import generate_site_key
from common.config import AppConfig, parse_app_config
from common.manifest import declared_defaults, project_root
from deployment.pki import PkiPaths, SiteKeys, add_site, init_pki
from deployment.processes import LOOPBACK, DeployError, Started, Supervisor, free_port
from deployment.processes import wait_for_port as _wait_for_port

CONNECTION = "fedclinic-local"
SITE_SERVE = ("fedclinic", "site", "serve")  # the hospital executor (``start_hospital``)
START_TIMEOUT = 60.0
REGISTER_TIMEOUT = 60.0
# Flower helpers must come from this interpreter's environment, offline and quiet.
OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    seconds: float
    round_seconds: list[float]
    log: Path


def deployment_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, **OFFLINE_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def flower_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run_config_overrides(values: dict[str, Any]) -> str:
    """``--run-config`` text: ``key=value`` pairs, strings quoted as TOML strings."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in values.items())


class LocalFederation:
    """One coordinator and its hospitals, each piece started on request."""

    def __init__(self, workdir: Path, supervisor: Supervisor) -> None:
        self.workdir = workdir.resolve()
        self.supervisor = supervisor
        self.pki = PkiPaths(self.workdir / "pki")
        self.coordinator = self.workdir / "coordinator"
        self.port = 0
        self.app_dir = project_root()  # what `flwr run` ships
        self.front = ""  # nginx's HOST:PORT once the perimeter runs; SuperNodes dial it

    @property
    def address(self) -> str:
        """The SuperLink itself, on loopback (operators, ``flwr``)."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def fleet_address(self) -> str:
        """What SuperNodes dial: nginx when the perimeter runs, else the SuperLink."""
        return self.front or self.address

    @property
    def flwr_home(self) -> Path:
        return self.coordinator / "flwr-home"

    def site_key(self, name: str) -> Path:
        """Where hospital ``name`` keeps its SuperNode private key (made by ``site keygen``)."""
        return self.workdir / "sites" / name / "keys" / f"{name}.key"

    def create_pki(self, site_names: list[str]) -> list[SiteKeys]:
        """The coordinator's CA; each hospital makes its key, the coordinator records the
        public half only (``site keygen`` then ``pki add-site --public-key``)."""
        init_pki(self.pki.root, hosts=("localhost", LOOPBACK))
        keys = []
        for name in site_names:
            made = generate_site_key(self.site_key(name).parent, name)
            recorded = add_site(self.pki.root, name, public_key=made.public_key)
            keys.append(SiteKeys(name, recorded.public_key, made.private_key, recorded.fingerprint))
        return keys

    def start_superlink(self, port: int = 0, name: str = "superlink") -> Started:
        """TLS on every API, SuperNode auth, a database file, no dependency installs.

        ``port`` 0 picks a free one; a restart passes the old :attr:`port` (same database,
        certificates and connection) and another ``name`` for its log."""
        self.port = port or free_port()
        self.coordinator.mkdir(parents=True, exist_ok=True)
        argv = [
            flower_bin("flower-superlink"),
            *("--ssl-ca-certfile", str(self.pki.ca_cert)),
            *("--ssl-certfile", str(self.pki.server_cert)),
            *("--ssl-keyfile", str(self.pki.server_key)),
            "--enable-supernode-auth",
            *("--database", str(self.coordinator / "state.db")),
            "--disable-runtime-dependency-installation",
            *("--host", LOOPBACK, "--port", str(self.port)),
        ]
        env = {"FLWR_HOME": str(self.flwr_home)}
        superlink = self.supervisor.start(name, argv, cwd=self.coordinator, env=env)
        _wait_for_port(superlink, self.port, START_TIMEOUT)
        self._write_connection()
        return superlink

    def register(self, keys: SiteKeys) -> int:
        """``flwr supernode register``; returns the node ID the SuperLink assigned."""
        argv = [flower_bin("flwr"), "supernode", "register", str(keys.public_key), CONNECTION]
        argv += ["--name", keys.name, "--format", "json"]
        done = self.supervisor.run(
            f"register-{keys.name}", argv, self.workdir, self._cli_env(), REGISTER_TIMEOUT
        )
        out = done.log_text()
        try:
            return int(json.JSONDecoder().raw_decode(out[out.index("{") :])[0]["node-id"])
        except (ValueError, KeyError) as error:
            last = " ".join(line.strip() for line in out.strip().splitlines()[-3:])
            raise DeployError(f"Could not register {keys.name}: {last}") from error

    def start_supernode(
        self,
        name: str,
        key: Path | None,
        root_certificates: Path | None,
        data_path: Path | None = None,
        max_retries: int | None = None,
    ) -> Started:
        """A SuperNode; ``root_certificates=None`` means plaintext (``--insecure``)."""
        home = self.workdir / "sites" / name
        home.mkdir(parents=True, exist_ok=True)
        argv = [flower_bin("flower-supernode"), "--superlink", self.fleet_address]
        argv += ["--insecure"] if root_certificates is None else []
        argv += ["--root-certificates", str(root_certificates)] if root_certificates else []
        argv += ["--auth-supernode-private-key", str(key)] if key else []
        if data_path is not None:
            argv += ["--node-config", f"data-path={json.dumps(str(data_path))} site-name='{name}'"]
        if max_retries is not None:
            argv += ["--max-retries", str(max_retries), "--max-wait-time", "30"]
        argv += ["--host", LOOPBACK, "--port", str(free_port())]
        env = {"FLWR_HOME": str(home / "flwr-home"), "CUDA_VISIBLE_DEVICES": ""}
        return self.supervisor.start(f"supernode-{name}", argv, cwd=home, env=env)

    def start_hospital(
        self,
        name: str,
        key: Path | None,
        root_certificates: Path | None,
        data_path: Path,
        approvals: Path,
        serve: Sequence[str] = SITE_SERVE,
    ) -> tuple[Started, Started]:
        """A SuperNode in ``--isolation process`` and its executor (``fedclinic site serve``).

        The SuperNode's Runtime API listens on loopback and hands tasks only to a holder of
        ``sites/<name>/superexec.secret`` (0600); the executor runs the installed ClientApp
        for runs whose bundle ``approvals`` lists. ``serve`` is the executor's command
        before its options (a benchmark passes one serving a no-op app). Returns
        (SuperNode, executor).
        """
        home = self.workdir / "sites" / name
        secret = _write_secret(home / "superexec.secret")
        runtime = f"{LOOPBACK}:{free_port()}"
        argv = [flower_bin("flower-supernode"), "--superlink", self.fleet_address]
        argv += ["--insecure"] if root_certificates is None else []
        argv += ["--root-certificates", str(root_certificates)] if root_certificates else []
        argv += ["--auth-supernode-private-key", str(key)] if key else []
        argv += ["--node-config", f"data-path={json.dumps(str(data_path))} site-name='{name}'"]
        argv += ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]
        argv += ["--host", LOOPBACK, "--port", runtime.rsplit(":", 1)[1]]
        env = {"FLWR_HOME": str(home / "flwr-home"), "CUDA_VISIBLE_DEVICES": ""}
        supernode = self.supervisor.start(f"supernode-{name}", argv, cwd=home, env=env)
        command = [_executable(serve[0]), *serve[1:], "--supernode", runtime]
        command += ["--secret-file", str(secret), "--approvals", str(approvals)]
        executor = self.supervisor.start(f"executor-{name}", command, cwd=home, env=env)
        return supernode, executor

    def freeze_app(self) -> Path:
        """Copy the files ``flwr run`` would ship to ``app/`` and ship that from now on, so
        the approved bundle stays the run's bundle whatever happens to the source tree."""
        from flwr.cli.build import build_fab_from_disk

        target = self.workdir / "app"
        with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(self.app_dir))) as bundle:
            for member in bundle.namelist():
                if not member.startswith(".info/"):
                    (target / member).parent.mkdir(parents=True, exist_ok=True)
                    (target / member).write_bytes(bundle.read(member))
        self.app_dir = target
        return target

    def approve(self, name: str) -> Path:
        """At site ``name``: approve the bundle of ``app_dir`` (``fedclinic site approve
        --app-dir``) in ``sites/<name>/approvals.json``."""
        from client.approval import (
            app_dir_bundle,
            bundle_approval,
            load_approvals_or_empty,
            save_approvals,
            with_approval,
        )

        path = self.workdir / "sites" / name / "approvals.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        approval = bundle_approval(app_dir_bundle(self.app_dir))
        save_approvals(path, with_approval(load_approvals_or_empty(path), approval))
        return path

    def start_perimeter(self) -> Started:
        """nginx on a free loopback port in front of the SuperLink (Fleet API only); the
        SuperNodes started afterwards dial it. Config and logs under ``nginx/``."""
        from deployment.perimeter import nginx_site, start_nginx

        port = free_port()
        site = nginx_site(self.pki.root, f"{LOOPBACK}:{port}", self.address)
        nginx = start_nginx(self.supervisor, site, self.nginx_dir)
        self.front = f"{LOOPBACK}:{port}"
        return nginx

    @property
    def nginx_dir(self) -> Path:
        return self.workdir / "nginx"

    def run(
        self,
        run_config: dict[str, Any],
        timeout: float,
        watch: list[Started],
        on_line: Callable[[str], None] = lambda line: None,
        name: str = "flwr-run",
    ) -> RunResult:
        """``flwr run --stream`` the app; fails if it or a watched process stops early."""
        run_dir = Path(str(run_config["run-dir"]))
        started_at = time.monotonic()
        process = self.launch(run_config, name)
        log = process.log
        seen = 0
        while process.alive():
            seen = _follow(log, seen, on_line)
            if time.monotonic() - started_at > timeout:
                raise DeployError(f"The run did not finish within {timeout:.0f} s. See {log}")
            if dead := [w for w in watch if not w.alive()]:
                raise DeployError(f"{dead[0].name} stopped during the run. See {dead[0].log}")
            time.sleep(0.2)
        _follow(log, seen, on_line)
        seconds = time.monotonic() - started_at
        rounds = _read_rounds(run_dir)
        if process.popen.returncode != 0 or len(rounds) < int(run_config["num-server-rounds"]):
            raise DeployError(
                f"The run ended with code {process.popen.returncode} after {len(rounds)} of "
                f"{run_config['num-server-rounds']} rounds. See {log} and {run_dir}"
            )
        return RunResult(run_dir, seconds, [float(r.get("seconds", 0.0)) for r in rounds], log)

    def launch(self, run_config: dict[str, Any], name: str = "flwr-run") -> Started:
        """Start ``flwr run --stream`` (log ``<name>.log``) and return at once."""
        if self.pki.registry.is_file():  # name nodes by their registered keys
            run_config = {"site-registry": str(self.pki.registry), **run_config}
        argv = [flower_bin("flwr"), "run", str(self.app_dir), CONNECTION, "--stream"]
        argv += ["--run-config", run_config_overrides(run_config)]
        return self.supervisor.start(name, argv, cwd=self.workdir, env=self._cli_env())

    def _write_connection(self) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{self.address}"\n'
            f'root-certificates = "{self.pki.ca_cert}"\n',
            encoding="utf-8",
        )

    def _cli_env(self) -> dict[str, str]:
        return {"FLWR_HOME": str(self.flwr_home)}


def federation_config(sites: int, rounds: int, examples: int, run_dir: Path) -> dict[str, Any]:
    """The run config of a local deployment: small model, every site required each round."""
    return {
        "num-server-rounds": rounds,
        "model": "cnn-small",
        "synthetic-examples": examples,
        "local-epochs": 1,
        "min-train-nodes": sites,
        "min-evaluate-nodes": sites,
        "min-available-nodes": sites,
        "run-dir": str(run_dir),
    }


def app_config(overrides: dict[str, Any]) -> AppConfig:
    return parse_app_config({**declared_defaults(project_root() / "pyproject.toml"), **overrides})


def _executable(name: str) -> str:
    """A console script of this environment by name; a path or interpreter unchanged."""
    return flower_bin(name) if os.sep not in name else name


def _follow(log: Path, seen: int, on_line: Callable[[str], None]) -> int:
    """Pass each complete new line of ``log`` to ``on_line``; return the new offset."""
    if not log.exists():
        return seen
    with log.open("rb") as handle:
        handle.seek(seen)
        chunk = handle.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    for line in complete.decode("utf-8", errors="replace").splitlines():
        on_line(line)
    return seen + len(complete)


def _read_rounds(run_dir: Path) -> list[dict[str, Any]]:
    try:
        rounds = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["rounds"]
    except (OSError, ValueError, KeyError):
        return []
    return list(rounds)


def _write_secret(path: Path) -> Path:
    """A fresh SuperExec secret (64 hex characters, read by Flower as raw bytes), 0600."""
    import secrets

    from common.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.chmod(0o600)
        tmp.write_text(secrets.token_hex(32), encoding="ascii")
    return path

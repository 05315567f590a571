"""``fedclinic deploy local``: a real TLS + authenticated federation on this machine.

Creates a PKI and a synthetic image folder per site in a work directory (with --data
dicom: DICOM files and a labels.csv, read as a hospital's DICOM export), starts a
SuperLink and one SuperNode per site on 127.0.0.1 with the commands of
docs/deployment.md, registers every site's key, runs the app with ``flwr run``, prints
the run directory and stops every process (also on Ctrl-C or failure). The work
directory (PKI, data, logs, run) is kept.

With --perimeter, the whole trust boundary of docs/deployment.md: each site approves the
app's bundle (`site approve`), each hospital is a SuperNode in `--isolation process` with
the long-lived executor `fedclinic site serve` (only approved bundles run, no per-message
start), the SuperLink listens on loopback and the SuperNodes reach it through nginx
(Fleet API only); `flwr run` goes to the SuperLink on loopback.

With --secure-aggregation, the run has `secure-aggregation = true`: the hospitals' updates
reach the coordinator only as one SecAgg+ masked sum (the same ClientApp serves both modes).
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:  # light modules, but only the chosen subcommand is imported at run time
    from rich.console import Console

    from common.config import AppConfig
    from deployment.deploy_local import LocalFederation, RunResult
    from deployment.pki import SiteKeys
    from deployment.processes import Started

DEFAULT_EXAMPLES = 60
DEFAULT_TIMEOUT = 900.0
DataFormat = Literal["folder", "dicom"]  # --data: how each site's synthetic images are written


@dataclass(frozen=True)
class Deployment:
    """What a local deployment did: the run, the registered node IDs, its processes."""

    result: RunResult
    node_ids: dict[str, int]
    extra: list[Started]  # started by ``before_run``
    processes: list[Started]  # every process started, all stopped by now
    seconds: float
    # each process's exit code when the run had ended, before any was stopped; None: running
    exit_codes_at_run_end: dict[str, int | None]


@dataclass(frozen=True)
class DeployOptions:
    sites: int
    rounds: int
    examples: int
    workdir: Path
    timeout: float
    perimeter: bool = False
    # the hospital executor's command before its options (--perimeter); None: `site serve`
    serve: Sequence[str] | None = None
    secure_aggregation: bool = False  # run config `secure-aggregation = true` (SecAgg+)
    data: DataFormat = "folder"  # each site's data: an image folder, or `dicom` files + labels.csv


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="run a real TLS + authenticated federation on this machine",
        description="Deployments.",
    )
    commands = parser.add_subparsers(dest="deploy_command", metavar="DEPLOY_COMMAND", required=True)
    local = commands.add_parser(
        "local",
        help="SuperLink + one SuperNode per synthetic site on 127.0.0.1",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    local.add_argument("--sites", type=int, default=3, help="hospitals (SuperNodes)")
    local.add_argument("--rounds", type=int, default=2, help="federation rounds")
    local.add_argument(
        "--examples", type=int, default=DEFAULT_EXAMPLES, help="mean training images per site"
    )
    local.add_argument("--workdir", type=Path, help="work directory (default: a new temp dir)")
    local.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds the run may take"
    )
    local.add_argument(
        "--perimeter",
        action="store_true",
        help="nginx in front of a loopback SuperLink; approved apps only, via `site serve`",
    )
    local.add_argument(
        "--secure-aggregation",
        action="store_true",
        help="run with `secure-aggregation = true` (SecAgg+: the coordinator sees only the "
        "sum of the updates); needs --sites ≥ 3",
    )
    local.add_argument(
        "--data",
        choices=get_args(DataFormat),
        default="folder",
        help="how each site's synthetic images are written: an image folder (default) or "
        "DICOM files with a labels.csv",
    )
    local.set_defaults(handler=run_local)


def run_local(args: argparse.Namespace) -> int:
    from rich.console import Console

    options = _options(args)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        deploy_local(options, Console(highlight=False, soft_wrap=True))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _options(args: argparse.Namespace) -> DeployOptions:
    """Check the command line; one Keras-style line per mistake."""
    from common.errors import ConfigError, invalid_value
    from common.manifest import project_root

    for flag, value in (("--sites", args.sites), ("--rounds", args.rounds)):
        if value < 1:
            raise ConfigError(invalid_value(flag, "an integer ≥ 1", value))
    if args.examples < 1:
        raise ConfigError(invalid_value("--examples", "an integer ≥ 1", args.examples))
    if args.timeout <= 0:
        raise ConfigError(invalid_value("--timeout", "a number > 0", args.timeout))
    if args.secure_aggregation and args.sites < 3:  # every site trains: min-train-nodes ≥ 3
        expected = "an integer ≥ 3 with --secure-aggregation"
        raise ConfigError(invalid_value("--sites", expected, args.sites))
    app = project_root()
    if not (app / "pyproject.toml").is_file():  # `flwr run` builds the app from its folder
        raise ConfigError(invalid_value("app folder", "a folder with pyproject.toml", str(app)))
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        raise ConfigError(invalid_value("--workdir", "a new or empty directory", str(args.workdir)))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fedclinic-deploy-"))
    return DeployOptions(
        args.sites,
        args.rounds,
        args.examples,
        workdir,
        args.timeout,
        args.perimeter,
        secure_aggregation=args.secure_aggregation,
        data=args.data,
    )


def deploy_local(
    options: DeployOptions,
    console: Console,
    before_run: Callable[[LocalFederation], list[Started]] | None = None,
) -> Deployment:
    """The whole local deployment; ``before_run(federation)`` may start more nodes (tests)."""
    from deployment.deploy_local import LocalFederation, app_config, deployment_env
    from deployment.processes import Supervisor

    started_at = time.monotonic()
    workdir = options.workdir.resolve()
    names = [f"site-{i + 1}" for i in range(options.sites)]
    run_config = run_config_for(options, workdir)
    config = app_config(run_config)
    console.print(f"[bold]fedclinic deploy local[/bold]: work directory {workdir}")
    with Supervisor(deployment_env(), workdir / "logs") as supervisor:
        federation = LocalFederation(workdir, supervisor)
        keys = federation.create_pki(names)
        _ok(console, f"PKI: CA, SuperLink certificate, {len(keys)} site keys in {workdir}/pki")
        data = [_site_data(workdir, config, i, name, options.data) for i, name in enumerate(names)]
        kind = "DICOM data" if options.data == "dicom" else "data"
        _ok(console, f"synthetic {kind} for {len(data)} sites checked with `fedclinic site check`")
        federation.start_superlink()
        _ok(console, f"SuperLink on https://{federation.address} (TLS, SuperNode auth, database)")
        node_ids: dict[str, int] = {}
        for site_keys in keys:
            node_ids[site_keys.name] = federation.register(site_keys)
            _ok(console, f"registered {site_keys.name}'s key: node {node_ids[site_keys.name]}")
        if options.perimeter:
            nodes = _start_perimeter(federation, keys, data, options, console)
        else:
            nodes = [
                federation.start_supernode(k.name, k.private_key, federation.pki.ca_cert, path)
                for k, path in zip(keys, data, strict=True)
            ]
        _ok(console, f"{options.sites} SuperNodes started (TLS, authenticated)")
        extra = before_run(federation) if before_run else []
        secure = " with secure aggregation (SecAgg+)" if options.secure_aggregation else ""
        console.print(
            f"[bold]flwr run[/bold] {options.rounds} round(s) on {options.sites} sites{secure}"
        )
        result = federation.run(
            run_config, options.timeout, watch=[*nodes], on_line=_progress(console)
        )
        exit_codes = {started.name: started.popen.poll() for started in supervisor.started}
        console.print("stopping every process ...")
    total = time.monotonic() - started_at
    rounds = ", ".join(f"{s:.1f}" for s in result.round_seconds)
    _ok(console, f"run directory: {result.run_dir}")
    console.print(
        f"wall time {total:.1f} s (flwr run {result.seconds:.1f} s; rounds {rounds} s); "
        f"logs in {workdir / 'logs'}"
    )
    return Deployment(result, node_ids, extra, list(supervisor.started), total, exit_codes)


def run_config_for(options: DeployOptions, workdir: Path) -> dict[str, Any]:
    """The run config ``flwr run`` gets: the local federation's, with
    ``secure-aggregation = true`` under ``--secure-aggregation``."""
    from deployment.deploy_local import federation_config

    run_config = federation_config(options.sites, options.rounds, options.examples, workdir / "run")
    if options.secure_aggregation:
        run_config["secure-aggregation"] = True
    return run_config


def _start_perimeter(
    federation: LocalFederation,
    keys: list[SiteKeys],
    data: list[Path],
    options: DeployOptions,
    console: Console,
) -> list[Started]:
    """nginx, then per site: approve the frozen app, start its SuperNode and executor.
    Returns every process the run depends on (nginx, SuperNodes, executors)."""
    from deployment.deploy_local import SITE_SERVE

    app = federation.freeze_app()
    _ok(console, f"app frozen for `flwr run` in {app}")
    nginx = federation.start_perimeter()
    _ok(
        console,
        f"nginx on https://{federation.front} → SuperLink, Fleet API only "
        f"(config {federation.nginx_dir / 'nginx.conf'})",
    )
    started = [nginx]
    for site_keys, path in zip(keys, data, strict=True):
        approvals = federation.approve(site_keys.name)
        _ok(console, f"{site_keys.name} approved the app's bundle in {approvals}")
        started += federation.start_hospital(
            site_keys.name,
            site_keys.private_key,
            federation.pki.ca_cert,
            path,
            approvals,
            serve=options.serve or SITE_SERVE,
        )
    _ok(console, f"{len(keys)} executors (`fedclinic site serve`), SuperNodes dial nginx")
    return started


def _site_data(
    workdir: Path, config: AppConfig, hospital: int, name: str, data: DataFormat = "folder"
) -> Path:
    """Write hospital ``hospital``'s synthetic images as an image folder (``data`` =
    ``dicom``: DICOM files and ``labels.csv``) and check them."""
    from client.site_check import check_site
    from common.data.dicom_write import write_dicom_site
    from common.data.folder import write_image_folder
    from common.data.synthetic import synthetic_site
    from deployment.processes import DeployError

    spec = config.data.spec()
    site = synthetic_site(config.seed, hospital, config.data.synthetic_examples, spec)
    root = workdir / "sites" / name / "data"
    write = write_dicom_site if data == "dicom" else write_image_folder
    write(root, {"train": site.train, "test": site.test}, spec.class_names)
    report = check_site(root, spec, name, config.data.holdout_fraction, config.seed)
    if not report.ok:
        raise DeployError(f"Generated data of {name} failed its check: {report.problems[0]}")
    return root


def _progress(console: Console) -> Callable[[str], None]:
    from common.text import strip_ansi

    def show(line: str) -> None:
        plain = strip_ansi(line)
        if "[fedclinic]" in plain or plain.startswith("ERROR"):
            console.print(f"  {plain.split('[fedclinic]')[-1].strip()}", markup=False)

    return show


def _ok(console: Console, text: str) -> None:
    console.print(f"[green]✓[/green] {text}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt

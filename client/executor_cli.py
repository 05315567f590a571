"""``fedclinic site approve`` and ``fedclinic site serve``: what a hospital runs, and the
long-lived executor that runs it (see :mod:`client.approval`, :mod:`client.executor`).

Heavy imports (Flower, TensorFlow) happen inside the handlers, never at import time.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

APPROVE_DOC = """Record a Flower App Bundle this hospital accepts: its id (publisher/name),
version and SHA-256. `fedclinic site serve` runs a run's task only when the run's bundle
hash is approved here and the approved version is the installed fedclinic version; it
then runs the installed ClientApp, never the bundle's code.

  fedclinic site approve --approvals approvals.json --app-dir /path/to/fedclinic
  fedclinic site approve --approvals approvals.json --fab fedclinic.fab
  fedclinic site approve --approvals approvals.json --fab-hash HEX \\
      --fab-id fedclinic/fedclinic --version 0.1.0
  fedclinic site approve --approvals approvals.json --list | --revoke HEX
"""

SERVE_DOC = """Serve every ClientApp task of this hospital's SuperNode with the installed,
approved fedclinic ClientApp, in this one process (no per-message start). The SuperNode
must run with `--isolation process --superexec-auth-secret-file FILE` and its Runtime API on
loopback (`--host 127.0.0.1 --port PORT`); give the same secret file here. Runs whose
bundle is not approved are refused with one line in this log. Stops on Ctrl-C / SIGTERM.
"""


def add_executor_commands(commands: Any) -> None:
    approve = commands.add_parser(
        "approve",
        help="record an app bundle (id, version, SHA-256) this site accepts to run",
        description=APPROVE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    approve.add_argument("--approvals", type=Path, required=True, help="the approvals file")
    source = approve.add_mutually_exclusive_group(required=True)
    source.add_argument("--app-dir", type=Path, help="an app folder, bundled as `flwr run` does")
    source.add_argument("--fab", type=Path, help="a .fab file")
    source.add_argument("--fab-hash", help="a bundle's SHA-256 (with --fab-id and --version)")
    source.add_argument("--list", action="store_true", help="print the approvals")
    source.add_argument("--revoke", metavar="HASH", help="remove the approval of HASH")
    approve.add_argument("--fab-id", help="publisher/name, with --fab-hash")
    approve.add_argument("--version", help="the app version, with --fab-hash")
    approve.set_defaults(handler=run_approve)

    serve = commands.add_parser(
        "serve",
        help="the long-lived executor that runs approved apps for this site's SuperNode",
        description=SERVE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--supernode", required=True, help="the SuperNode's Runtime API HOST:PORT")
    serve.add_argument("--secret-file", type=Path, required=True, help="the SuperExec secret")
    serve.add_argument("--approvals", type=Path, required=True, help="the approvals file")
    serve.add_argument("--root-certificates", type=Path, help="CA of a TLS Runtime API")
    serve.add_argument("--poll-interval", type=float, default=0.2, help="seconds between polls")
    serve.set_defaults(handler=run_serve)


def run_approve(args: argparse.Namespace) -> int:
    from client import approval as ap
    from common.errors import ConfigError

    path: Path = args.approvals
    approvals = ap.load_approvals_or_empty(path)
    if args.list:
        for entry in approvals:
            print(f"{entry.fab_hash}  {entry.fab_id} {entry.version}  ({entry.approved_at})")
        return 0
    if args.revoke:
        ap.save_approvals(path, ap.without_hash(approvals, args.revoke))
        print(f"Revoked {ap.checked_hash(args.revoke)} in {path}")
        return 0
    if args.fab_hash:
        if not (args.fab_id and args.version):
            raise ConfigError("`--fab-hash` needs `--fab-id` and `--version`.")
        new = ap.make_approval(args.fab_id, args.version, args.fab_hash)
    elif args.fab:
        new = ap.bundle_approval(args.fab.read_bytes())
    else:
        new = ap.bundle_approval(ap.app_dir_bundle(args.app_dir.expanduser().resolve()))
    ap.save_approvals(path, ap.with_approval(approvals, new))
    print(f"Approved {new.fab_id} {new.version} (FAB {new.fab_hash}) in {path}")
    _warn_version(new.version)
    return 0


def run_serve(args: argparse.Namespace, app: Any = None) -> int:
    """``site serve``; ``app`` (Python callers only, e.g. a benchmark's no-op ClientApp)
    replaces the installed ClientApp, which is what every hospital runs."""
    import signal
    import threading
    from logging import INFO

    from flwr.common import log

    from client.approval import load_approvals
    from client.executor import HospitalExecutor, installed_client_app, installed_version
    from client.runtime_link import RuntimeLink
    from common.errors import ConfigError
    from common.quiet import import_keras

    approvals = load_approvals(args.approvals)  # fail now, in one line, if unreadable
    secret = args.secret_file.read_bytes()
    if not secret:
        raise ConfigError(f"The secret file {args.secret_file} is empty.")
    roots = args.root_certificates.read_bytes() if args.root_certificates else None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    version = installed_version()
    app = installed_client_app() if app is None else app
    import_keras()  # warm: the first task then pays only for its model and traced graphs
    link = RuntimeLink(args.supernode, secret, root_certificates=roots)
    log(
        INFO,
        "[fedclinic] Hospital executor for SuperNode %s: fedclinic %s, %d approved bundle(s)",
        args.supernode,
        version,
        len(approvals),
    )
    executor = HospitalExecutor(link, args.approvals, app, version)
    try:
        executor.serve(stop, args.poll_interval, _log_served)
    finally:
        link.close()
    log(INFO, "[fedclinic] Hospital executor stopped.")
    return 0


def _log_served(served: Any) -> None:
    from logging import INFO

    from flwr.common import log

    log(
        INFO,
        "[fedclinic] Task of run %s %s in %.3f s (%s)",
        served.run_id,
        served.outcome,
        served.seconds,
        served.timing(),
    )


def _warn_version(version: str) -> None:
    from client.executor import installed_version

    installed = installed_version()
    if version != installed:
        print(
            f"Note: the installed fedclinic is {installed}; `site serve` refuses this app "
            f"({version}) until the installed version matches."
        )

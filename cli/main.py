"""The ``fedclinic`` command: one entry point, one module per subcommand.

Subcommand modules are imported only when named, so ``fedclinic --help`` stays fast and
no subcommand's dependencies load for another. Each module exposes
``register(subparsers) -> None``, which adds its parser and sets ``handler`` to a function
``(argparse.Namespace) -> int`` (the exit code). Every failure ends in one line on stderr
and a non-zero exit (:mod:`cli.boundary`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cli.boundary import EXIT_USAGE, run_reporting_failures

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "report": ("server.report_cli", "write report.md with plots for a run directory"),
    "pki": ("deployment.pki_cli", "create the CA, the SuperLink certificate and SuperNode keys"),
    "site": ("client.site_cli", "a hospital's tools: `site check`, `keygen`, `approve`, `serve`"),
    "deploy": ("deployment.deploy_cli", "run a real TLS + authenticated federation locally"),
    "run": ("deployment.run_cli", "`flwr run --stream` that exits non-zero when the run failed"),
    "perimeter": ("deployment.perimeter_cli", "write the nginx config exposing only the Fleet API"),
    "audit": ("simulations.audit.cli", "privacy audits of a finished run: `audit membership`"),
}


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedclinic", description="Federated learning for hospitals (Flower + Keras)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in SUBCOMMANDS.items():
        if name == selected:
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in args_list if a in SUBCOMMANDS), None)
    parser = build_parser(selected)
    args = parser.parse_args(args_list)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    return run_reporting_failures(lambda: int(handler(args)))


if __name__ == "__main__":
    sys.exit(main())

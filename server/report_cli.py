"""``fedclinic report RUN_DIR``: (re)write a run's ``report.md`` and plots."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write report.md with plots for a run directory",
        description="Write RUN_DIR/report.md and RUN_DIR/plots/*.png from the run's metrics.json.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run directory")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from server.report import write_report

    print(write_report(args.run_dir.resolve()))
    return 0

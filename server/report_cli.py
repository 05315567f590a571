"""``fedclinic report RUN_DIR``: (re)write a run's ``report.md`` and plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common.errors import FedclinicError


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
    from server.run_dir import CONFIG_FILE, METRICS_FILE

    run_dir = args.run_dir.resolve()
    for name, needs_rounds in ((METRICS_FILE, True), (CONFIG_FILE, False)):
        check_run_file(run_dir / name, needs_rounds)
    print(write_report(run_dir))
    return 0


def check_run_file(path: Path, needs_rounds: bool) -> None:
    """Refuse, in one line, a run file that is not a JSON object (with a ``rounds`` list);
    a missing file is left to the report, which says what the directory lacks."""
    if not path.is_file():
        return
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FedclinicError(f"Invalid JSON in {path}: {error}.") from None
    if not isinstance(document, dict) or (
        needs_rounds and not isinstance(document.get("rounds"), list)
    ):
        expected = "a JSON object with a `rounds` list" if needs_rounds else "a JSON object"
        received = (
            f"keys {sorted(document)}" if isinstance(document, dict) else type(document).__name__
        )
        raise FedclinicError(
            f"Invalid content in {path}. Expected {expected}. Received: {received}"
        )

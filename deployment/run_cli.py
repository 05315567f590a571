"""``fedclinic run``: ``flwr run --stream`` with an exit code a scheduler can trust.

Runs ``flwr run APP [FEDERATION] --stream`` (the same arguments, ``--run-config`` and
``--federation-config`` passed through), streams its output unchanged, then asks the
SuperLink for the run's status (``flwr ls FEDERATION --run-id ID --format json``) and reads
``metrics.json`` in the run directory the ServerApp logged (``[fedclinic] run directory:``;
else an absolute ``run-dir`` in ``--run-config``). Flower 1.42's ``flwr run --stream``
exits 0 even when the run failed; this command exits

  0  the run completed (``run completed`` and ``run directory: PATH``)
  1  the run failed, was stopped or its end is unknown (``run failed: REASON`` and
     ``run directory: PATH`` on stderr), or ``flwr`` itself failed (cannot connect, unknown
     connection, no app: one line)
  2  usage

FEDERATION is ``flwr run``'s second argument: a SuperLink connection in
``$FLWR_HOME/config.toml`` (default: its ``default``). Run it where the ServerApp writes its
run directory (the coordinator host) so that ``metrics.json`` can be read; elsewhere only
Flower's status decides.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from common.errors import FedclinicError
from deployment.run_outcome import (
    FlowerRun,
    Verdict,
    box_message,
    decide,
    is_box_line,
    is_finished,
    logged_run_dir,
    one_line,
    parse_ls_json,
    read_outcome,
    started_run_id,
)

STATUS_WAIT = 20.0  # seconds to wait for the SuperLink to mark a streamed run finished
LS_TIMEOUT = 60.0  # seconds one `flwr ls` may take


@dataclass
class Streamed:
    """What ``flwr run --stream`` printed that matters here."""

    run_id: int | None = None
    run_dir: Path | None = None
    error_lines: list[str] = field(default_factory=list)  # rich error panels (stderr)
    returncode: int = 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="`flwr run --stream` that exits non-zero when the run failed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", nargs="?", default=".", metavar="APP", help="the app folder")
    parser.add_argument(
        "federation",
        nargs="?",
        default=None,
        metavar="FEDERATION",
        help="SuperLink connection in $FLWR_HOME/config.toml (default: its `default`)",
    )
    parser.add_argument(
        "--run-config",
        "-c",
        action="append",
        default=[],
        metavar="KEY=VALUE ...",
        help="passed to `flwr run --run-config` (repeatable)",
    )
    parser.add_argument(
        "--federation-config",
        action="append",
        default=[],
        metavar="KEY=VALUE ...",
        help="passed to `flwr run --federation-config` (repeatable)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    flwr = flwr_executable()
    connection = [args.federation] if args.federation else []
    argv = [flwr, "run", args.app, *connection, "--stream"]
    argv += [item for value in args.run_config for item in ("--run-config", value)]
    argv += [item for value in args.federation_config for item in ("--federation-config", value)]
    streamed = stream(argv, sys.stdout, sys.stderr)
    if streamed.run_id is None:
        reason = (
            box_message(streamed.error_lines) or f"no run was started (code {streamed.returncode})"
        )
        raise FedclinicError(f"flwr run: {reason}")
    if streamed.error_lines:  # e.g. the log stream broke: say why, then decide
        print(f"flwr run: {box_message(streamed.error_lines)}", file=sys.stderr, flush=True)
    run_dir = streamed.run_dir or configured_run_dir(args.run_config)
    flower, flower_error = flower_status(flwr, connection, streamed.run_id)
    outcome = read_outcome(run_dir) if run_dir is not None else None
    verdict = decide(streamed.run_id, flower, outcome, flower_error)
    report(verdict, run_dir)
    return verdict.exit_code


def report(verdict: Verdict, run_dir: Path | None) -> None:
    target = sys.stdout if verdict.exit_code == 0 else sys.stderr
    for line in verdict.lines(run_dir):
        print(line, file=target, flush=True)


def flwr_executable() -> str:
    """This environment's ``flwr`` (beside the interpreter), else the one on PATH."""
    beside = Path(sys.executable).parent / "flwr"
    if beside.exists():
        return str(beside)
    found = shutil.which("flwr")
    if found is None:
        raise FedclinicError("`flwr` was not found beside the interpreter or on PATH.")
    return found


def child_env() -> dict[str, str]:
    """Unbuffered output (the log streams through a pipe) and one-line-wide error panels."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "1000"}


def stream(argv: list[str], out: TextIO, err: TextIO) -> Streamed:
    """Run ``argv``, copying its output as it comes (stdout to ``out``, stderr to ``err``
    except rich error panels, which are kept) and noting the run ID and run directory."""
    streamed = Streamed()
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        text=True,
        errors="replace",
        bufsize=1,
    )
    if process.stdout is None or process.stderr is None:  # never: both are PIPE
        raise FedclinicError("flwr run: its output could not be read.")
    errors = threading.Thread(
        target=_copy_stderr, args=(process.stderr, err, streamed), daemon=True
    )
    errors.start()
    try:
        for line in process.stdout:
            out.write(line)
            out.flush()
            _note(line, streamed)
        streamed.returncode = process.wait()
    finally:
        if process.poll() is None:  # interrupted: the run itself goes on at the SuperLink
            process.terminate()
            process.wait(timeout=30)
        errors.join(timeout=5)
    return streamed


def _copy_stderr(source: TextIO, err: TextIO, streamed: Streamed) -> None:
    for line in source:
        if is_box_line(line):
            streamed.error_lines.append(line)
            continue
        err.write(line)
        err.flush()
        _note(line, streamed)


def _note(line: str, streamed: Streamed) -> None:
    if streamed.run_id is None:
        streamed.run_id = started_run_id(line)
    if (run_dir := logged_run_dir(line)) is not None:
        streamed.run_dir = run_dir


def configured_run_dir(run_config: list[str]) -> Path | None:
    """An absolute ``run-dir`` given in ``--run-config`` (the ServerApp resolves a relative
    one against its own working directory, unknown here)."""
    from flwr.common.config import parse_config_args

    try:
        value = parse_config_args(run_config or None).get("run-dir", "")
    except Exception:  # flwr run itself reports a malformed --run-config
        return None
    path = Path(str(value)).expanduser()
    return path if str(value) and path.is_absolute() else None


def flower_status(
    flwr: str, connection: list[str], run_id: int, wait: float = STATUS_WAIT
) -> tuple[FlowerRun | None, str]:
    """The SuperLink's status of ``run_id``, polled until finished or ``wait`` seconds
    pass; (None, why) when it cannot be read."""
    argv = [flwr, "ls", *connection, "--run-id", str(run_id), "--format", "json"]
    deadline = time.monotonic() + wait
    while True:
        try:
            completed = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                env=child_env(),
                timeout=LS_TIMEOUT,
                check=False,
            )
            flower = parse_ls_json(completed.stdout, run_id)
        except subprocess.TimeoutExpired:
            return None, f"`flwr ls` did not answer within {LS_TIMEOUT:.0f} s"
        except ValueError as error:
            return None, one_line(str(error))
        if is_finished(flower) or time.monotonic() >= deadline:
            return flower, ""
        time.sleep(1.0)

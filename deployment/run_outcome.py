"""How a run ended, from Flower's run status and fedclinic's ``metrics.json``.

``flwr run --stream`` exits 0 whatever the run's fate (Flower 1.42), so ``fedclinic run``
combines the two sources of truth: the SuperLink's status (``flwr ls --run-id ID --format
json``: ``finished:completed``, ``finished:failed`` with its details, ``finished:stopped``,
or not finished yet) and the run directory's ``outcome`` (``{"status": "completed" |
"failed" | "running", "message": ...}``, :mod:`server.run_dir`). A run counts as completed
only when neither source reports a failure. Everything here is pure text and JSON handling;
:mod:`deployment.run_cli` runs the processes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

EXIT_COMPLETED = 0
EXIT_FAILED = 1

FINISHED_COMPLETED = "finished:completed"
FINISHED_FAILED = "finished:failed"
FINISHED_STOPPED = "finished:stopped"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STARTED = re.compile(r"Successfully started run (\d+)")
_RUN_DIR = re.compile(r"\[fedclinic\] run directory: (.+?)\s*$")
_BOX_EDGES = "╭╮╰╯─│ "


@dataclass(frozen=True)
class FlowerRun:
    """The SuperLink's view of one run (``flwr ls --run-id ID --format json``)."""

    status: str  # pending, starting, running, finished:completed|failed|stopped
    details: str = ""


@dataclass(frozen=True)
class Outcome:
    """``metrics.json`` ``outcome``: what the ServerApp recorded."""

    status: str  # completed, failed, running
    message: str = ""


@dataclass(frozen=True)
class Verdict:
    """The wrapper's exit code and, for a failure, the one-line reason."""

    exit_code: int
    reason: str = ""

    def lines(self, run_dir: Path | None) -> list[str]:
        """What to print: ``run failed: <reason>`` (failures) and ``run directory: <path>``."""
        where = f"run directory: {run_dir if run_dir is not None else 'unknown'}"
        if self.exit_code == EXIT_COMPLETED:
            return ["run completed", where]
        return [f"run failed: {self.reason}", where]


def plain(line: str) -> str:
    """``line`` without terminal colour codes."""
    return _ANSI.sub("", line)


def started_run_id(line: str) -> int | None:
    """The run ID of ``flwr run``'s ``Successfully started run N`` line, else None."""
    match = _STARTED.search(plain(line))
    return int(match.group(1)) if match else None


def logged_run_dir(line: str) -> Path | None:
    """The path of the ServerApp's ``[fedclinic] run directory: PATH`` log line, else None."""
    match = _RUN_DIR.search(plain(line))
    return Path(match.group(1)) if match else None


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


def is_box_line(line: str) -> bool:
    """Whether ``line`` belongs to a rich error panel (``╭─ Error ─╮`` / ``│ … │`` / ``╰─╯``)."""
    stripped = plain(line).strip()
    return bool(stripped) and stripped[0] in "╭│╰"


def box_message(lines: list[str]) -> str:
    """The text of the rich error panels among ``lines`` (Flower's CLI errors), one line."""
    rows = [plain(line).strip() for line in lines]
    return one_line(" ".join(row.strip(_BOX_EDGES) for row in rows if row.startswith("│")))


def parse_ls_json(text: str, run_id: int) -> FlowerRun:
    """The run's status from ``flwr ls --run-id ID --format json`` output; ``ValueError``
    (one line) when Flower reports an error or the output holds no such run."""
    start = text.find("{")
    try:
        document = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        raise ValueError(f"`flwr ls` printed no JSON: {one_line(text)[:200]!r}")
    if not document.get("success"):
        raise ValueError(one_line(str(document.get("error-message", "no error message"))))
    for run in document.get("runs", []):
        if str(run.get("run-id")) == str(run_id):
            return FlowerRun(
                str(run.get("status", "")), one_line(str(run.get("status-details", "")))
            )
    raise ValueError(f"`flwr ls` did not list run {run_id}")


def read_outcome(run_dir: Path) -> Outcome | None:
    """``<run_dir>/metrics.json``'s outcome; None when the file is missing or unreadable
    (e.g. the ServerApp runs on another host, or failed before creating it)."""
    try:
        document = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        outcome = document["outcome"]
        return Outcome(str(outcome["status"]), one_line(str(outcome.get("message", ""))))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def is_finished(flower: FlowerRun) -> bool:
    return flower.status.startswith("finished")


def decide(
    run_id: int, flower: FlowerRun | None, outcome: Outcome | None, flower_error: str = ""
) -> Verdict:
    """The exit code and reason of run ``run_id``.

    ``flower`` is None when its status could not be read (``flower_error`` says why);
    ``outcome`` is None when no ``metrics.json`` was found. A failure reported by either
    source fails the run; fedclinic's own message is the preferred reason.
    """
    failed_message = outcome.message if outcome and outcome.status == "failed" else ""
    if flower is None:
        if outcome is not None and outcome.status == "completed":
            return Verdict(EXIT_COMPLETED)
        if failed_message:
            return Verdict(EXIT_FAILED, failed_message)
        return Verdict(
            EXIT_FAILED,
            "the run's status could not be read from the SuperLink "
            f"({flower_error or 'no reply'}); see `flwr log {run_id}`",
        )
    if flower.status == FINISHED_COMPLETED:
        if failed_message:
            return Verdict(EXIT_FAILED, failed_message)
        if outcome is not None and outcome.status != "completed":
            return Verdict(
                EXIT_FAILED,
                f"Flower reports the run completed but metrics.json says `{outcome.status}`",
            )
        return Verdict(EXIT_COMPLETED)
    if failed_message:
        return Verdict(EXIT_FAILED, failed_message)
    if flower.status == FINISHED_STOPPED:
        return Verdict(EXIT_FAILED, f"the run was stopped at the SuperLink (`flwr stop {run_id}`)")
    if flower.status == FINISHED_FAILED:
        return Verdict(
            EXIT_FAILED,
            flower.details or f"Flower reports `{FINISHED_FAILED}`; see `flwr log {run_id}`",
        )
    return Verdict(
        EXIT_FAILED,
        f"the log stream ended while the run is `{flower.status or 'unknown'}` at the SuperLink; "
        f"follow it with `flwr log {run_id}`",
    )

"""The error boundary of fedclinic's entry points (``fedclinic``, ``python -m simulations``).

A failure a person can act on (a :class:`FedclinicError`, a file that cannot be read or
written, a corrupt JSON or TOML document) becomes one line on stderr and exit code 1;
Ctrl-C (or SIGTERM where the command maps it to KeyboardInterrupt) becomes ``interrupted``
and 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Callable

from common.errors import FedclinicError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

REPORTED = (FedclinicError, OSError, json.JSONDecodeError, tomllib.TOMLDecodeError)


def failure_line(error: BaseException) -> str:
    """The one line shown for ``error`` (one of :data:`REPORTED`)."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        where = _path_text(error.filename)
        if error.filename2 is not None:
            where += f" -> {_path_text(error.filename2)}"
        return f"{error.strerror}: {where}"
    if isinstance(error, json.JSONDecodeError):
        return f"Invalid JSON: {error}"
    if isinstance(error, tomllib.TOMLDecodeError):
        return f"Invalid TOML: {error}"
    return " ".join(str(error).split()) or type(error).__name__


def run_reporting_failures(action: Callable[[], int]) -> int:
    """``action()``'s exit code; a reported failure prints one line and returns 1 (130 on
    Ctrl-C)."""
    try:
        return action()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except REPORTED as error:
        print(f"error: {failure_line(error)}", file=sys.stderr)
        return EXIT_FAILED


def _path_text(path: object) -> str:
    return os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else str(path)

"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every write goes to a temporary file beside the target, which is flushed to disk
(``fsync``), renamed over the target, and then the directory itself is flushed, so the
rename survives a power loss as well as a crash.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (renames, new and deleted files) to disk."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same suffix); rename it over on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with tmp_path.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
        fsync_directory(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    with atomic_path(target) as tmp:
        write(tmp)


def write_json_atomic(target: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, sort_keys=False, allow_nan=True) + "\n"
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")

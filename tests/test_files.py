"""Atomic writes: the file is flushed, renamed over the target, then its directory flushed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from common.files import write_json_atomic


def test_the_rename_is_flushed_with_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run" / "metrics.json"
    target.parent.mkdir()
    target.write_text("old\n")
    synced: list[tuple[str, int, str]] = []  # (kind, inode, what the target held then)
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        info = os.fstat(fd)
        kind = "directory" if stat.S_ISDIR(info.st_mode) else "file"
        synced.append((kind, info.st_ino, target.read_text()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)

    write_json_atomic(target, {"rounds": []})

    new = '{\n  "rounds": []\n}\n'
    assert target.read_text() == new
    assert [(kind, held) for kind, _, held in synced] == [("file", "old\n"), ("directory", new)]
    assert synced[1][1] == target.parent.stat().st_ino  # the target's own directory
    assert synced[0][1] == target.stat().st_ino  # the file that became the target
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]  # no temporary left

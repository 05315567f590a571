"""Fast checks of the benchmark scripts' plumbing; the benchmarks themselves are not run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _common, scale
from benchmarks._common import REPO, process_tree, resolve_data, table, tree_memory_mib


def test_relative_data_paths_resolve_from_the_repository() -> None:
    assert resolve_data("../shared/data/x.npz") == (REPO.parent / "shared/data/x.npz").resolve()
    assert resolve_data("/abs/x.npz") == Path("/abs/x.npz")


def test_table_is_markdown_with_one_row_per_entry() -> None:
    text = table(["name", "value"], [["a", 0.12345], ["bb", 1234.5], ["c", None]])
    lines = text.splitlines()
    assert lines[0].startswith("| name")
    assert set(lines[1]) <= {"|", "-"}
    assert "0.123" in lines[2]
    assert "1234.5" in lines[3]
    assert len(lines) == 5


def test_process_tree_memory_includes_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert child.pid in process_tree(os.getpid())
        memory = tree_memory_mib(os.getpid())
        assert memory["processes"] >= 2
        assert memory["rss_mib"] > 0
    finally:
        child.kill()
        child.wait()


def test_scale_samples_the_same_number_of_hospitals_at_any_size() -> None:
    args = scale.parse_args(["--sampled", "10"])
    for hospitals in (1000, 10000):
        overrides = scale.overrides_for(args, hospitals)
        assert overrides["fraction-train"] * hospitals == pytest.approx(10)
        assert overrides["min-train-nodes"] == overrides["min-evaluate-nodes"] == 10


def test_json_results_are_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    _common.write_json(target, {"ratio": 1.2})
    assert json.loads(target.read_text()) == {"ratio": 1.2}
    assert not list(target.parent.glob("*.tmp"))


@pytest.mark.parametrize("name", ["accuracy", "overhead", "scale"])
def test_every_script_has_help(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--out" in done.stdout

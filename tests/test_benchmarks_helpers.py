"""Fast checks of the benchmark scripts' plumbing; the benchmarks themselves are not run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _common, scale
from benchmarks._common import REPO, process_tree, resolve_data, tree_memory_mib
from common.text import markdown_table as table


def test_relative_data_paths_resolve_from_the_repository() -> None:
    assert resolve_data("../shared/data/x.npz") == (REPO.parent / "shared/data/x.npz").resolve()
    assert resolve_data("/abs/x.npz") == Path("/abs/x.npz")


def test_table_formats_numbers_and_pads_columns() -> None:
    # Prepare
    rows: list[list[Any]] = [["a", 0.12345], ["bb", 1234.5], ["c", None], ["d", 7]]

    # Execute
    text = table(["name", "value"], rows)

    # Assert
    assert text.splitlines() == [
        "| name | value  |",
        "|------|--------|",
        "| a    | 0.123  |",
        "| bb   | 1234.5 |",
        "| c    |        |",
        "| d    | 7      |",
    ]


def _vm_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` read here, independently of the helper under test."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


# A sleeping child that starts a sleeping grandchild and prints the grandchild's pid.
TREE = (
    "import subprocess, sys, time\n"
    "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(grandchild.pid, flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_tree_memory_sums_the_processes_of_the_tree() -> None:
    # Prepare
    child = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        time.sleep(0.5)  # both are asleep; their RSS no longer changes

        # Execute
        memory = tree_memory_mib(child.pid)

        # Assert
        expected_kib = _vm_rss_kib(child.pid) + _vm_rss_kib(grandchild)
        assert sorted(process_tree(child.pid)) == sorted([child.pid, grandchild])
        assert memory["processes"] == 2.0
        assert memory["rss_mib"] == pytest.approx(expected_kib / 1024, abs=0.5)
        assert 0 < memory["root_pss_mib"] < memory["pss_mib"] <= memory["rss_mib"]
    finally:
        child.kill()
        child.wait(timeout=30)


def test_memory_watch_records_each_round_once(tmp_path: Path) -> None:
    # Prepare
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"rounds": [{}, {}]}), encoding="utf-8")
    watch = _common.MemoryWatch(os.getpid(), metrics, interval=0.05)

    # Execute
    watch.start()
    time.sleep(0.5)
    metrics.write_text("{corrupt", encoding="utf-8")  # a half-written file counts as no news
    time.sleep(0.3)
    watch.stop()

    # Assert
    assert [r["round"] for r in watch.rounds] == [1, 2]
    assert watch.peak["rss_mib"] == pytest.approx(_vm_rss_kib(os.getpid()) / 1024, rel=0.5)


def test_scale_samples_the_same_number_of_hospitals_at_any_size() -> None:
    args = scale.parse_args(["--sampled", "10"])
    for hospitals in (1000, 10000):
        overrides = scale.overrides_for(args, hospitals)
        assert overrides["fraction-train"] * hospitals == pytest.approx(10)
        assert overrides["min-train-nodes"] == overrides["min-evaluate-nodes"] == 10


def test_json_results_are_written_whole_and_nothing_else(tmp_path: Path) -> None:
    # Prepare
    target = tmp_path / "sub" / "out.json"
    target.parent.mkdir()
    target.write_text("old", encoding="utf-8")

    # Execute
    _common.write_json(target, {"ratio": 1.2, "rows": [1, 2]})

    # Assert
    assert target.read_text(encoding="utf-8") == (
        '{\n  "ratio": 1.2,\n  "rows": [\n    1,\n    2\n  ]\n}\n'
    )
    assert list(target.parent.iterdir()) == [target]


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


def test_existing_data_names_a_missing_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks._common import existing_data

    present = tmp_path / "data.npz"
    present.write_bytes(b"")

    found, missing = existing_data(str(present)), existing_data(str(tmp_path / "none.npz"))

    assert (found, missing) == (present, None)
    assert capsys.readouterr().err == f"error: data file not found: {tmp_path / 'none.npz'}\n"


# -- accuracy benchmark: stratified subsets, --set, --strategies ---------------------------
@pytest.mark.parametrize(
    ("class_counts", "size", "expected"),
    [
        ([1214, 3494], 500, [129, 371]),  # PneumoniaMNIST's train split: 25.8 % / 74.2 %
        ([50, 50], 10, [5, 5]),
        ([1, 99], 10, [1, 9]),  # the rare class keeps one image, so AUC stays defined
        ([3, 3, 4], 10, [3, 3, 4]),  # all of it
        ([10, 20, 30], 7, [1, 2, 4]),  # largest remainders: 1.17, 2.33, 3.5
    ],
)
def test_stratified_counts_are_proportional_and_sum_to_size(
    class_counts: list[int], size: int, expected: list[int]
) -> None:
    from benchmarks._baselines import stratified_counts

    assert stratified_counts(class_counts, size) == expected


@pytest.mark.parametrize("size", [0, 11])
def test_stratified_counts_refuse_sizes_outside_the_split(size: int) -> None:
    from benchmarks._baselines import stratified_counts

    with pytest.raises(ValueError, match=rf"Expected an integer in \[1, 10\]\. Received: {size}"):
        stratified_counts([4, 6], size)


def test_train_subset_file_cuts_only_the_training_split(tmp_path: Path) -> None:
    # Prepare
    import numpy as np

    from benchmarks._baselines import write_train_subset

    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 70).reshape(-1, 1)
    images = rng.integers(0, 256, size=(100, 4, 4), dtype=np.uint8)
    images[:, 0, 0] = np.arange(100)  # each image's index, to check it is a subset
    arrays = {"train_images": images, "train_labels": labels}
    arrays |= {"val_images": images[:7], "val_labels": labels[:7]}
    source = tmp_path / "data.npz"
    np.savez(source, **arrays)

    # Execute
    target = write_train_subset(source, 20, seed=3, target=tmp_path / "subset.npz")

    # Assert
    with np.load(target) as cut:
        kept = cut["train_images"][:, 0, 0]
        assert len(set(kept.tolist())) == 20
        assert (cut["train_images"] == images[kept]).all()
        assert (cut["train_labels"] == labels[kept]).all()
        assert np.bincount(cut["train_labels"].reshape(-1)).tolist() == [6, 14]
        assert (cut["val_images"] == images[:7]).all()


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["server-eta=0.001"], {"server-eta": 0.001}),
        (["augment=true", "local-steps=20"], {"augment": True, "local-steps": 20}),
        (['model="resnet-gn"', "strategy=fedyogi"], {"model": "resnet-gn", "strategy": "fedyogi"}),
    ],
)
def test_accuracy_set_values_read_as_toml(pairs: list[str], expected: dict[str, Any]) -> None:
    from benchmarks.accuracy import parse_sets

    assert parse_sets(pairs) == expected


def test_accuracy_set_without_equals_is_one_line() -> None:
    from benchmarks.accuracy import parse_sets

    with pytest.raises(SystemExit, match=r"Expected KEY=VALUE\. Received: 'augment'"):
        parse_sets(["augment"])


def test_accuracy_strategies_all_is_every_strategy_the_config_accepts() -> None:
    import typing

    from benchmarks.accuracy import STRATEGY_SETTINGS, strategy_names
    from common.config import StrategyName

    assert strategy_names("all") == list(typing.get_args(StrategyName))
    assert sorted(STRATEGY_SETTINGS) == sorted(typing.get_args(StrategyName))
    with pytest.raises(SystemExit, match="Received: fedsgd"):
        strategy_names("fedavg, fedsgd")


def test_accuracy_strategy_settings_are_valid_run_config() -> None:
    from benchmarks.accuracy import STRATEGY_SETTINGS
    from common.config import parse_app_config
    from simulations.runner import run_config_with

    for strategy, settings in STRATEGY_SETTINGS.items():
        parse_app_config(run_config_with({"strategy": strategy, **settings}))

"""The run report: report.md and non-empty PNG plots, from a run directory alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from common.cli import main
from server.report import write_report


def node(status: str, **metrics: float) -> dict[str, Any]:
    if status == "ok":
        return {"status": "ok", "metrics": {"num-examples": 10, **metrics}}
    return {"status": status, "reason": f"{status} reason"}


def round_record(number: int, central: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "round": number,
        "train": {"loss": 0.7 - 0.1 * number, "accuracy": 0.5 + 0.1 * number},
        "evaluate": {"loss": 0.6 / number, "accuracy": 0.6, "auc": None},
        "participation": {"sampled": 3, "ok": 2, "failed": 1, "timeout": 0, "rejected": 0},
        "nodes": {
            "train": {
                "11": node("ok", loss=0.5),
                "22": node("ok", loss=0.4),
                "33": node("failed" if number == 1 else "rejected"),
            },
            "evaluate": {"11": node("ok", accuracy=0.6, auc=0.7), "22": node("timeout")},
        },
        "seconds": 1.5,
    }
    if central:
        record["central"] = {
            "loss": 0.5, "accuracy": 0.75, "auc": 0.8, "sensitivity": 0.5, "specificity": 1.0,
            "num-examples": 8, "confusion-matrix": [[4, 0], [2, 2]],
        }  # fmt: skip
    return record


def run_dir(tmp_path: Path, central: bool, outcome: dict[str, Any]) -> Path:
    rounds = [round_record(1, central), round_record(2, central)]
    (tmp_path / "metrics.json").write_text(json.dumps({"rounds": rounds, "outcome": outcome}))
    config = {"strategy": "fedavg", "num-server-rounds": 3, "class-names": "normal,pneumonia"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def assert_real_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"))
    assert min(pixels.shape) > 100
    assert len(np.unique(pixels)) > 10  # something was drawn


def test_report_with_central_evaluation(tmp_path: Path) -> None:
    directory = run_dir(tmp_path, central=True, outcome={"status": "completed"})

    report = write_report(directory)

    plots = sorted(p.name for p in (directory / "plots").iterdir())
    assert plots == ["confusion.png", "global.png", "hospitals.png", "participation.png"]
    for name in plots:
        assert_real_png(directory / "plots" / name)
    text = report.read_text()
    assert "**Status: completed** — 2 of 3 rounds recorded." in text
    assert "![Confusion matrix on the central set (final round)](plots/confusion.png)" in text
    assert "| 2 | 1.5000 | 2/3 | 0 | 0 | 1 | 0.3000 | 0.6000 | n/a | 0.7500 |" in text
    assert "- round 1, train, node 33: **failed** — failed reason" in text
    assert "- round 2, evaluate, node 22: **timeout** — timeout reason" in text
    assert "No final model was saved." in text


def test_report_of_a_failed_run_without_central_evaluation(tmp_path: Path) -> None:
    outcome = {"status": "failed", "message": "Round 3 stopped the run: ..."}
    directory = run_dir(tmp_path, central=False, outcome=outcome)

    text = write_report(directory).read_text()

    assert "**Status: failed**" in text
    assert "> Round 3 stopped the run: ..." in text
    assert not (directory / "plots" / "confusion.png").exists()
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) == []


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = run_dir(tmp_path, central=False, outcome={"status": "completed"})

    code = main(["report", str(directory)])

    assert code == 0
    assert capsys.readouterr().out.strip() == str(directory / "report.md")


def test_cli_refuses_a_directory_without_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["report", str(tmp_path)])

    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "error: Invalid value for `RUN_DIR`. Expected a run directory containing "
        f"metrics.json. Received: {str(tmp_path.resolve())!r}"
    )

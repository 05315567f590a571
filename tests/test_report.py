"""The run report: report.md and non-empty PNG plots, from a run directory alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cli.main import main
from server.records import PHASES
from server.report import write_report
from server.report_plots import hospitals_by_name
from server.report_privacy import final_rows, hospital_epsilons
from tests.factories import run_config

# Flower node ids are 20-digit numbers; the report must show names instead.
ONE, TWO, THREE = "12345678901234567891", "12345678901234567892", "12345678901234567893"


def node(
    status: str, name: str | None = None, kind: str = "simulated-synthetic", **metrics: float
) -> dict[str, Any]:
    named = {"name": name, "data-kind": kind} if name else {}
    if status == "ok":
        return {**named, "status": "ok", "metrics": {"num-examples": 10, **metrics}}
    return {**named, "status": status, "reason": f"{status} reason"}


def round_record(number: int, central: bool, kind: str = "simulated-synthetic") -> dict[str, Any]:
    record: dict[str, Any] = {
        "round": number,
        "train": {"loss": 0.7 - 0.1 * number, "accuracy": 0.5 + 0.1 * number},
        "evaluate": {"loss": 0.6 / number, "accuracy": 0.6, "auc": None},
        "participation": {"sampled": 3, "ok": 2, "failed": 1, "timeout": 0, "rejected": 0},
        "nodes": {
            "train": {
                ONE: node("ok", "hospital-1", kind, loss=0.5, **{"num-examples": 100 + number}),
                TWO: node("ok", "hospital-2", kind, loss=0.4),
                # failed before it ever replied; named by its rejected reply of round 2
                THREE: node("failed") if number == 1 else node("rejected", "hospital-10", kind),
            },
            "evaluate": {
                ONE: node("ok", "hospital-1", kind, accuracy=0.6, auc=0.7, **{"num-examples": 25}),
                TWO: node("timeout", "hospital-2", kind),
            },
        },
        "seconds": 1.5,
    }
    if central:
        record["central"] = {
            "loss": 0.5, "accuracy": 0.75, "auc": 0.8, "sensitivity": 0.5, "specificity": 1.0,
            "num-examples": 8, "confusion-matrix": [[4, 0], [2, 2]],
        }  # fmt: skip
    return record


def run_dir(
    tmp_path: Path, central: bool, outcome: dict[str, Any], kind: str = "simulated-synthetic"
) -> Path:
    rounds = [round_record(1, central, kind), round_record(2, central, kind)]
    (tmp_path / "metrics.json").write_text(json.dumps({"rounds": rounds, "outcome": outcome}))
    config = run_config(num_server_rounds=3, strategy="fedadam", data_path="/coordinator/x.npz")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def section(text: str, title: str) -> list[str]:
    """The lines of the report section ``## title`` (without its heading)."""
    after = text.split(f"## {title}\n", 1)[1]
    return after.split("\n## ", 1)[0].strip().splitlines()


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
    assert "| 2 | 1.5000 | 2/3 | 0 | 0 | 1 | n/a | 0.3000 | 0.6000 | n/a | 0.7500 |" in text
    assert "- round 1, train, hospital-10: **failed** — failed reason" in text
    assert "- round 2, evaluate, hospital-2: **timeout** — timeout reason" in text
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


def test_hospitals_table_shows_what_each_hospital_reported(tmp_path: Path) -> None:
    directory = run_dir(tmp_path, central=False, outcome={"status": "completed"})

    text = write_report(directory).read_text()

    assert section(text, "Hospitals")[2:] == [
        "| hospital | node id | data kind | training images | held-out images | rounds trained |",
        "|---|---|---|---|---|---|",
        f"| hospital-1 | `{ONE}` | simulated-synthetic | 102 | 25 | 2 |",
        f"| hospital-2 | `{TWO}` | simulated-synthetic | 10 | n/a | 2 |",
        f"| hospital-10 | `{THREE}` | simulated-synthetic | n/a | n/a | 0 |",
    ]
    table = set(section(text, "Hospitals"))
    elsewhere = "\n".join(line for line in text.splitlines() if line not in table)
    assert [node for node in (ONE, TWO, THREE) if node in elsewhere] == []


def test_coordinator_settings_list_what_the_coordinator_decided(tmp_path: Path) -> None:
    directory = run_dir(tmp_path, central=False, outcome={"status": "completed"})
    config = run_config(num_server_rounds=3, strategy="fedadam", data_path="/coordinator/x.npz")
    keys = [
        "strategy", "num-server-rounds", "fraction-train", "fraction-evaluate",
        "min-train-nodes", "min-evaluate-nodes", "min-available-nodes", "round-timeout",
        "node-wait-timeout", "max-update-norm", "server-eta", "server-tau", "local-epochs",
        "local-steps", "batch-size", "learning-rate", "local-optimizer", "augment", "model",
        "class-names", "image-size", "channels", "min-examples", "holdout-fraction", "seed",
        "central-eval-path", "checkpoints-keep", "resume",
    ]  # fmt: skip

    text = write_report(directory).read_text()

    assert section(text, "Coordinator settings")[2:] == [
        "| setting | value |",
        "|---|---|",
        *[f"| `{key}` | `{config[key]!r}` |" for key in keys],
    ]
    assert section(text, "Simulation settings")[2:] == [
        "| setting | value |",
        "|---|---|",
        *[
            f"| `{key}` | `{config[key]!r}` |"
            for key in ("dataset", "data-path", "partitioner", "dirichlet-alpha",
                        "synthetic-examples")
        ],
    ]  # fmt: skip


@pytest.mark.parametrize("secure", [False, True])
def test_secure_aggregation_settings_show_only_when_it_was_on(tmp_path: Path, secure: bool) -> None:
    directory = run_dir(tmp_path, central=False, outcome={"status": "completed"})
    config = {**run_config(min_train_nodes=3), "secure-aggregation": secure}
    (directory / "config.json").write_text(json.dumps(config))
    keys = (
        "secure-aggregation", "secagg-num-shares", "secagg-reconstruction-threshold",
        "secagg-clipping-range", "secagg-quantization-range",
    )  # fmt: skip

    settings = section(write_report(directory).read_text(), "Coordinator settings")

    shown = [f"| `{key}` | `{config[key]!r}` |" for key in keys]
    assert [line for line in shown if line in settings] == (shown if secure else [])


def test_a_deployed_run_never_shows_the_coordinators_data_settings(tmp_path: Path) -> None:
    directory = run_dir(tmp_path, central=False, outcome={"status": "completed"}, kind="folder")

    text = write_report(directory).read_text()

    assert "## Simulation settings" not in text
    for key in ("`dataset`", "`data-path`", "/coordinator/x.npz", "`partitioner`"):
        assert key not in text
    assert f"| hospital-1 | `{ONE}` | folder | 102 | 25 | 2 |" in text


def test_plots_order_and_label_hospitals_by_name() -> None:
    rounds = [round_record(1, central=False), round_record(2, central=False)]

    assert hospitals_by_name(rounds, PHASES) == [
        (ONE, "hospital-1"), (TWO, "hospital-2"), (THREE, "hospital-10"),
    ]  # fmt: skip


def dp_run_dir(tmp_path: Path, mode: str) -> Path:
    """Two rounds under DP: hospital-10 trains only in round 2 (it failed in round 1)."""
    rounds = [round_record(1, central=False), round_record(2, central=False)]
    spent = {ONE: (0.5, 1.25), TWO: (0.75, 1.5), THREE: (None, 2.0)}
    for number, record in enumerate(rounds):
        nodes = record["nodes"]["train"]
        if number == 1:
            nodes[THREE] = node("ok", "hospital-10", loss=0.4)
        if mode == "record":
            for key, values in spent.items():
                if values[number] is not None:
                    nodes[key]["metrics"]["epsilon"] = values[number]
        federation = {"record": (0.75, 2.0), "hospital": (0.9, 1.6)}[mode][number]
        record["privacy"] = {"mode": mode, "delta": 1e-5, "epsilon": federation}
        if mode == "hospital":
            record["privacy"]["noise_multiplier"] = 1.1
    (tmp_path / "metrics.json").write_text(
        json.dumps({"rounds": rounds, "outcome": {"status": "completed"}})
    )
    config = run_config(num_server_rounds=2, dp=mode, dp_epsilon=3.0)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize(
    ("mode", "rows", "summary"),
    [
        ("record",
         ["| hospital-1 | 2 | 1.250 | 1e-05 |", "| hospital-2 | 2 | 1.500 | 1e-05 |",
          "| hospital-10 | 1 | 2.000 | 1e-05 |"],
         "Mode: record-level DP (each patient's record; every hospital accounts its own ε). "
         "Target ε for the whole run (`dp-epsilon`): 3. ε after the last recorded round (the "
         "most-spent hospital): 2.000."),
        ("hospital",
         ["| hospital-1 | 2 | 1.600 | 1e-05 |", "| hospital-2 | 2 | 1.600 | 1e-05 |",
          "| hospital-10 | 1 | 1.600 | 1e-05 |"],
         "Mode: hospital-level DP (each hospital's participation; one ε for the federation). "
         "Target ε for the whole run (`dp-epsilon`): 3. ε after the last recorded round (the "
         "federation): 1.600."),
    ],
)  # fmt: skip
def test_a_dp_run_reports_each_hospitals_final_epsilon(
    tmp_path: Path, mode: str, rows: list[str], summary: str
) -> None:
    directory = dp_run_dir(tmp_path, mode)

    text = write_report(directory).read_text()

    assert section(text, "Privacy") == [
        summary,
        "",
        "| hospital | rounds trained | final ε | δ |",
        "|---|---|---|---|",
        *rows,
    ]
    assert "![Privacy loss ε per round](plots/privacy.png)" in text
    assert_real_png(directory / "plots" / "privacy.png")
    settings = "\n".join(section(text, "Coordinator settings"))
    assert f"| `dp` | `{mode!r}` |" in settings
    assert "| `dp-epsilon` | `3.0` |" in settings


def test_per_hospital_epsilon_series_follow_what_each_reported(tmp_path: Path) -> None:
    rounds = json.loads((dp_run_dir(tmp_path, "record") / "metrics.json").read_text())["rounds"]

    series = hospital_epsilons(rounds)

    assert series == {
        "hospital-1": [0.5, 1.25],
        "hospital-2": [0.75, 1.5],
        "hospital-10": [None, 2.0],
    }


def test_a_run_without_dp_has_no_privacy_section(tmp_path: Path) -> None:
    directory = run_dir(tmp_path, central=False, outcome={"status": "completed"})

    text = write_report(directory).read_text()

    assert "## Privacy" not in text
    assert not (directory / "plots" / "privacy.png").exists()
    assert "`dp`" not in text


def test_a_resumed_run_keeps_one_row_per_hospital(tmp_path: Path) -> None:
    """A resumed simulation gives hospitals new node ids; the table follows their names."""
    rounds = json.loads((dp_run_dir(tmp_path, "record") / "metrics.json").read_text())["rounds"]
    renamed = {ONE: "98765432109876543211", TWO: "98765432109876543212"}
    resumed = json.loads(json.dumps(rounds[1]))
    resumed["round"] = 3
    for phase in ("train", "evaluate"):
        nodes = resumed["nodes"][phase]
        resumed["nodes"][phase] = {renamed.get(key, key): value for key, value in nodes.items()}
    resumed["nodes"]["train"][renamed[ONE]]["metrics"]["epsilon"] = 1.75

    rows = final_rows([*rounds, resumed])

    assert rows == [
        ["hospital-1", "3", "1.750", "1e-05"],
        ["hospital-2", "3", "1.500", "1e-05"],
        ["hospital-10", "2", "2.000", "1e-05"],
    ]

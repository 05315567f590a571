"""The report's privacy-audit section (server/report_audit.py, hooked into report.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from server.report import write_report
from tests.factories import run_config

TITLE = "Privacy audit (membership inference)"


def audit_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "epsilon": 2.5, "target": "global", "attack": "lira", "hospital": "all",
        "auc": 0.5123, "auc_ci": [0.4891, 0.5342],
        "tpr_at_0.1%": 0.0021, "tpr_at_0.1%_ci": [0.0, 0.0063],
        "tpr_at_1%": 0.0123, "tpr_at_1%_ci": [0.0061, 0.0204],
        "members": 4708, "non_members": 1148, "model_auc": 0.9512, "bound_violations": [],
    }  # fmt: skip
    return {**row, **overrides}


def audit(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "run-dir": "/runs/r", "data": "/data/pneumoniamnist.npz", "shadow-models": 8,
        "dp": {"mode": "record", "epsilon": 3.0, "delta": 1e-05},
        "lowest-fpr": 1 / 1148,
        "results": [
            audit_row(),
            audit_row(
                epsilon=2.0, target="update", attack="loss", hospital="hospital-3",
                auc=0.61, auc_ci=[0.58, 0.64], model_auc=None,
                bound_violations=["TPR at FPR 1 %: lower 95 % limit 0.0300 > e^ε·FPR + δ = 0.0200"],
            ),
        ],
        "verdict": "fail",
    }  # fmt: skip
    return {**document, **overrides}


def make_run(tmp_path: Path, audit_text: str | None = None, roc_plot: bool = False) -> Path:
    (tmp_path / "metrics.json").write_text(
        json.dumps({"rounds": [], "outcome": {"status": "completed"}})
    )
    (tmp_path / "config.json").write_text(json.dumps(run_config()))
    if audit_text is not None:
        (tmp_path / "audit-membership.json").write_text(audit_text, encoding="utf-8")
    if roc_plot:
        (tmp_path / "plots").mkdir()
        (tmp_path / "plots" / "audit-roc.png").write_bytes(b"\x89PNG")
    return tmp_path


def audit_section(report: Path) -> list[str]:
    after = report.read_text(encoding="utf-8").split(f"## {TITLE}\n", 1)[1]
    return after.split("\n## ", 1)[0].strip().splitlines()


def bound_text(epsilon: float, delta: float) -> str:
    low, high = (min(1.0, math.exp(epsilon) * fpr + delta) for fpr in (0.001, 0.01))
    return (
        f"- DP bound TPR ≤ e^ε·FPR + δ at ε = {epsilon:g}, δ = {delta:g}: "
        f"{low:.4f} at 0.1 % FPR, {high:.4f} at 1 % FPR."
    )


def test_the_section_shows_each_row_the_bounds_the_verdict_and_the_plot(tmp_path: Path) -> None:
    run = make_run(tmp_path, json.dumps(audit()), roc_plot=True)

    lines = audit_section(write_report(run))

    assert lines[2:6] == [
        "| target | attack | hospital | ε | attack AUC | TPR at 0.1 % FPR | TPR at 1 % FPR "
        "| members / non-members | model AUC |",
        "|---|---|---|---|---|---|---|---|---|",
        "| global | lira | all | 2.5 | 0.512 (0.489–0.534) | 0.0021 (0.0000–0.0063) "
        "| 0.0123 (0.0061–0.0204) | 4708 / 1148 | 0.951 |",
        "| update | loss | hospital-3 | 2 | 0.610 (0.580–0.640) | 0.0021 (0.0000–0.0063) "
        "| 0.0123 (0.0061–0.0204) | 4708 / 1148 | n/a |",
    ]
    assert lines[7:13] == [
        bound_text(2.0, 1e-5),
        bound_text(2.5, 1e-5),
        "",
        "**DP check: fail** — a measured TPR's lower 95 % limit exceeds the bound, so the DP "
        "implementation or its accounting is wrong:",
        "- update, loss, hospital-3: TPR at FPR 1 %: lower 95 % limit 0.0300 > e^ε·FPR + δ "
        "= 0.0200",
        "",
    ]
    assert lines[13] == (
        f"Lowest resolvable FPR: {100 / 1148:.3g} % (1 / 1148 non-members): a TPR at a "
        "smaller FPR cannot be measured with this sample."
    )
    assert "![Membership-inference ROC (log axes)](plots/audit-roc.png)" in lines
    assert lines[0].endswith("The run used record-level DP, target ε = 3, δ = 1e-05.")
    assert lines[-1].startswith("How to read it: ")


def test_a_run_without_dp_has_no_bound_and_says_so(tmp_path: Path) -> None:
    document = audit(
        dp={"mode": "off", "epsilon": None, "delta": None},
        results=[audit_row(epsilon=None)],
        verdict="no-dp",
        **{"lowest-fpr": 0.002},
    )
    run = make_run(tmp_path, json.dumps(document))

    lines = audit_section(write_report(run))

    assert lines[4].startswith("| global | lira | all | — | ")
    assert not [line for line in lines if "DP bound" in line]
    verdict = lines.index("**DP check: none** — the run used no DP, so no bound applies.")
    assert lines[verdict + 2] == (
        "Lowest resolvable FPR: 0.2 % (1 / 500 non-members): a TPR at a smaller FPR cannot be "
        "measured with this sample. The TPR at 0.1 % FPR is therefore not measured."
    )
    assert not [line for line in lines if "audit-roc.png" in line]
    assert lines[0].endswith("The run used no differential privacy.")


@pytest.mark.parametrize(
    ("splits", "named"),
    [(["train", "val"], " (splits `train`, `val`)"), (["test"], " (splits `test`)"), ([], "")],
)
def test_the_intro_names_the_non_member_splits(
    tmp_path: Path, splits: list[str], named: str
) -> None:
    run = make_run(tmp_path, json.dumps(audit(**{"non-member-splits": splits})))

    lines = audit_section(write_report(run))

    assert f"`/data/pneumoniamnist.npz`{named} that no hospital trained on;" in lines[0]


def test_without_an_audit_the_report_has_no_audit_section(tmp_path: Path) -> None:
    run = make_run(tmp_path)

    text = write_report(run).read_text(encoding="utf-8")

    assert "Privacy audit" not in text
    assert "## Plots" in text


def expected_missing(path: Path, key: str) -> str:
    return (
        f"Invalid content in {path}: `{key}` is missing (expected the JSON that "
        "`fedclinic audit membership` writes)."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            json.dumps({k: v for k, v in audit().items() if k != "verdict"}),
            lambda path: expected_missing(path, "verdict"),
        ),
        (
            json.dumps(audit(results=[audit_row(auc="high")])),
            lambda path: (
                f"Invalid content in {path}: `results.0.auc`: Input should be a valid number. "
                "Received: 'high' (expected the JSON that `fedclinic audit membership` writes)."
            ),
        ),
        (
            "[]",
            lambda path: (
                f"Invalid content in {path}: the document: Input should be an object. "
                "Received: [] (expected the JSON that `fedclinic audit membership` writes)."
            ),
        ),
    ],
)
def test_an_invalid_audit_is_one_line_naming_the_file(
    tmp_path: Path, text: str, expected: Any
) -> None:
    run = make_run(tmp_path, text)

    lines = audit_section(write_report(run))

    assert lines == [expected(run / "audit-membership.json")]


def test_an_audit_that_is_not_json_is_one_line_naming_the_file(tmp_path: Path) -> None:
    run = make_run(tmp_path, '{"results": [')

    lines = audit_section(write_report(run))

    assert len(lines) == 1
    assert lines[0].startswith(f"Invalid JSON in {run / 'audit-membership.json'}: ")

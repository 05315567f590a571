"""``fedclinic audit membership`` (simulations/audit/cli.py): exit codes, one-line errors,
the files it writes. The update attack is replaced by a fake (its own tests:
tests/test_audit_update.py); --shadow-models 0 keeps these runs to the loss attack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from simulations.audit.candidates import Candidates, load_candidates
from simulations.audit.output import HEADERS
from simulations.audit.update_attack import UpdateAttack
from tests.audit_factories import (
    audit_settings,
    memorizer,
    save_memorizer,
    write_run,
    write_tiny_npz,
)


def make_run(root: Path, **settings: object) -> tuple[Path, Path]:
    """A run of three hospitals (0 and 1 trained) whose model memorised the members."""
    data = write_tiny_npz(root / "data.npz")
    epsilons = settings.pop("epsilons", None)
    run_dir = write_run(root / "run", audit_settings(data, **settings), epsilons=epsilons)  # type: ignore[arg-type]
    found = load_candidates(run_dir, data)
    weights = memorizer(found.images[found.is_member], found.labels[found.is_member], seed=1)
    save_memorizer(weights, run_dir / "model.keras")
    return run_dir, data


def fake_update(
    run_dir: Path, candidates: Candidates, hospital: int, *, seed: int = 0
) -> UpdateAttack:
    """Scores that single out ``hospital``'s members completely."""
    scores = (candidates.hospital == hospital).astype(np.float64)
    return UpdateAttack(scores, hospital, 2, 0.05, 0.5)


@pytest.fixture(autouse=True)
def no_real_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("simulations.audit.membership._default_update_scores", lambda: fake_update)


def audit_args(run_dir: Path, data: Path, *extra: str) -> list[str]:
    return [
        "audit",
        "membership",
        str(run_dir),
        "--data",
        str(data),
        "--shadow-models",
        "0",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (
            ["--shadow-models", "3"],
            2,
            "Invalid value for `--shadow-models`. Expected 0 (loss attack only) or an even "
            "integer ≥ 8. Received: 3",
        ),
        (
            ["--shadow-models", "9"],
            2,
            "Invalid value for `--shadow-models`. Expected 0 (loss attack only) or an even "
            "integer ≥ 8. Received: 9",
        ),
        (
            ["--shadow-models", "-8"],
            2,
            "Invalid value for `--shadow-models`. Expected 0 (loss attack only) or an even "
            "integer ≥ 8. Received: -8",
        ),
        (
            ["--bootstrap", "99"],
            2,
            "Invalid value for `--bootstrap`. Expected an integer ≥ 100. Received: 99",
        ),
        (
            ["--hospitals", "0"],
            2,
            "Invalid value for `--hospitals`. Expected an integer ≥ 1. Received: 0",
        ),
        (["--seed", "-1"], 2, "Invalid value for `--seed`. Expected an integer ≥ 0. Received: -1"),
        (
            ["--non-member-splits", "train,holdout"],
            2,
            "Invalid value for `--non-member-splits`. Expected comma-separated split names "
            "from train, val, test. Received: 'train,holdout'",
        ),
        (
            ["--update-hospital", "hospital-2"],
            1,
            "Invalid value for `--update-hospital`. Expected the name of a hospital that trained "
            "(hospital-0, hospital-1). Received: 'hospital-2'",
        ),
        (["--data", "{tmp}/missing.npz"], 1, "Data not found: {tmp}/missing.npz"),
        (["RUN={tmp}/nowhere"], 1, "Run directory not found: {tmp}/nowhere"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    code: int,
    message: str,
) -> None:
    # Prepare
    run_dir, data = make_run(tmp_path)
    options = [arg.format(tmp=tmp_path) for arg in extra]
    if options and options[0].startswith("RUN="):
        run_dir, options = Path(options[0][4:]), []
    capsys.readouterr()
    # Execute
    exit_code = main(audit_args(run_dir, data, *options))
    # Assert
    assert exit_code == code
    assert capsys.readouterr().err == f"error: {message.format(tmp=tmp_path)}\n"


def test_a_run_without_its_model_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    run_dir, data = make_run(tmp_path)
    (run_dir / "model.keras").unlink()
    capsys.readouterr()
    # Execute
    exit_code = main(audit_args(run_dir, data))
    # Assert
    assert exit_code == 1
    expected = f"error: Not a finished run directory: {run_dir / 'model.keras'} not found\n"
    assert capsys.readouterr().err == expected


def test_prints_the_table_and_writes_the_json_and_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    run_dir, data = make_run(tmp_path)
    capsys.readouterr()
    # Execute
    exit_code = main(audit_args(run_dir, data, "--bootstrap", "100"))
    # Assert
    out = capsys.readouterr().out
    document = json.loads((run_dir / "audit-membership.json").read_text("utf-8"))
    assert exit_code == 0
    lines = out.splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == list(HEADERS)
    assert [cell.strip() for cell in lines[2].strip("|").split("|")][:3] == [
        "global",
        "loss",
        "all",
    ]
    assert "LiRA skipped: --shadow-models 0 (loss attack only)" in out
    assert (run_dir / "plots" / "audit-roc.png").stat().st_size > 0
    assert document["verdict"] == "no-dp"
    assert [(r["target"], r["hospital"]) for r in document["results"]] == [
        ("global", "all"),
        ("global", "hospital-0"),
        ("global", "hospital-1"),
        ("update", "hospital-0"),  # 20 + 20 training images: the first of the largest
    ]


def test_out_replaces_the_default_json(tmp_path: Path) -> None:
    # Prepare
    run_dir, data = make_run(tmp_path)
    target = tmp_path / "elsewhere" / "audit.json"
    # Execute
    exit_code = main(audit_args(run_dir, data, "--bootstrap", "100", "--out", str(target)))
    # Assert
    assert exit_code == 0
    assert json.loads(target.read_text("utf-8"))["shadow-models"] == 0
    assert not (run_dir / "audit-membership.json").exists()


def test_a_violated_dp_bound_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: record-level DP at ε 0.01; the fake update finds every member
    run_dir, data = make_run(tmp_path, dp="record", epsilons={0: 0.01, 1: 0.01})
    capsys.readouterr()
    # Execute
    exit_code = main(audit_args(run_dir, data, "--bootstrap", "100"))
    # Assert
    err = capsys.readouterr().err.splitlines()
    document = json.loads((run_dir / "audit-membership.json").read_text("utf-8"))
    assert exit_code == 1
    assert err[-1].startswith(
        "error: DP bound violated: update of hospital-0, loss-change attack: TPR at FPR 0.1 %"
    )
    assert document["verdict"] == "fail"
    assert document["dp"] == {"mode": "record", "epsilon": 0.01, "delta": 1e-05}

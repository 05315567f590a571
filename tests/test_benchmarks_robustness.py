"""The robustness benchmark's plumbing, with a fake run function: no simulation runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import robustness
from benchmarks._robustness_grid import Cell, Skipped, aggregate, expand, rejections, verdicts
from benchmarks.accuracy import STRATEGY_SETTINGS

RECOMMENDED_BETA = float(STRATEGY_SETTINGS["fedtrimmedavg"]["trim-beta"])


class FakeRun:
    """Records every run's overrides; AUC and accuracy come from a table or a default."""

    def __init__(self, aucs: dict[tuple[str, str, float, int], float] | None = None) -> None:
        self.aucs = aucs or {}
        self.calls: list[dict[str, Any]] = []

    def __call__(self, overrides: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        self.calls.append(overrides)
        key = (
            overrides["strategy"],
            overrides["attack"],
            overrides["attack-fraction"],
            overrides["seed"],
        )
        auc = self.aucs.get(key, 0.9)
        return {"auc": auc, "accuracy": auc - 0.1, "rejected_honest": 0}


def run_main(tmp_path: Path, fake: FakeRun, *flags: str) -> dict[str, Any]:
    data = tmp_path / "pneumoniamnist.npz"
    data.touch()
    out = tmp_path / "robustness.json"
    argv = ["--data", str(data), "--out", str(out), "--work-dir", str(tmp_path / "work")]
    code = robustness.main([*argv, *flags], run=fake)
    assert code == 0
    payload: dict[str, Any] = json.loads(out.read_text("utf-8"))
    return payload


# -- grid --------------------------------------------------------------------------------
def test_a_small_slice_expands_to_exactly_these_cells() -> None:
    # Execute
    cells, skipped = expand(
        ["fedavg", "bulyan"], ["none", "sign-flip"], [0.1, 0.2], 10, 10.0, RECOMMENDED_BETA
    )

    # Assert: 'none' once per strategy; Bulyan with f = 2 of 10 fails n ≥ 4f + 3 = 11
    assert [(c.strategy, c.attack, c.fraction, c.attackers) for c in cells] == [
        ("fedavg", "none", 0.0, 0),
        ("fedavg", "sign-flip", 0.1, 1),
        ("fedavg", "sign-flip", 0.2, 2),
        ("bulyan", "none", 0.0, 0),
        ("bulyan", "sign-flip", 0.1, 1),
    ]
    assert skipped == [
        Skipped(
            "bulyan",
            "sign-flip",
            0.2,
            "Bulyan needs n ≥ 4f + 3 = 11 hospitals for f = 2; n = 10",
        )
    ]


@pytest.mark.parametrize(
    ("hospitals", "fraction", "attackers", "runs"),
    [
        (10, 0.1, 1, True),  # 7 ≤ 10
        (10, 0.2, 2, False),  # 11 > 10
        (11, 0.2, 2, True),  # round(2.2) = 2: 11 ≤ 11
        (10, 0.25, 3, False),  # 2.5 rounds half up to 3: 15 > 10
        (20, 0.2, 4, True),  # 19 ≤ 20
    ],
)
def test_bulyan_runs_only_where_n_is_at_least_4f_plus_3(
    hospitals: int, fraction: float, attackers: int, runs: bool
) -> None:
    # Execute
    cells, skipped = expand(["bulyan"], ["alie"], [fraction], hospitals, 10.0, RECOMMENDED_BETA)

    # Assert
    assert [c.attackers for c in cells] == ([attackers] if runs else [])
    assert [s.reason for s in skipped] == (
        []
        if runs
        else [
            f"Bulyan needs n ≥ 4f + 3 = {4 * attackers + 3} hospitals for f = {attackers}; "
            f"n = {hospitals}"
        ]
    )


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--fractions", "0.5", "Invalid value for `--fractions`. Expected numbers > 0 and < 0.5"),
        ("--fractions", "0", "Invalid value for `--fractions`. Expected numbers > 0 and < 0.5"),
        ("--strategies", "fedavg,kurm", "Invalid value for `--strategies`. Expected 'all' or"),
        ("--attacks", "flip", "Invalid value for `--attacks`. Expected 'all' or names from"),
        ("--seeds", "1,x", "Invalid value for `--seeds`. Expected comma-separated numbers"),
    ],
)
def test_bad_flags_fail_with_one_line(tmp_path: Path, flag: str, value: str, message: str) -> None:
    # Prepare
    fake = FakeRun()

    # Execute
    with pytest.raises(SystemExit) as raised:
        run_main(tmp_path, fake, flag, value)

    # Assert
    assert str(raised.value).startswith(message)
    assert fake.calls == []


# -- overrides per run -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("strategy", "attack", "fraction", "expected"),
    [
        ("krum", "sign-flip", 0.2, {"strategy": "krum", "num-malicious-nodes": 2}),
        ("multikrum", "alie", 0.3, {"strategy": "multikrum", "num-malicious-nodes": 3}),
        ("bulyan", "gaussian", 0.1, {"num-malicious-nodes": 1, "attack-scale": 1.0}),
        ("fedtrimmedavg", "alie", 0.3, {"trim-beta": max(RECOMMENDED_BETA, 3 / 10)}),
        ("fedtrimmedavg", "alie", 0.1, {"trim-beta": max(RECOMMENDED_BETA, 1 / 10)}),
        ("fedavg", "scaling", 0.2, {"strategy": "fedavg", "attack-scale": 10.0}),
        ("fedavg+norm", "label-flip", 0.2, {"strategy": "fedavg", "max-update-norm": 7.5}),
        ("centeredclip", "none", 0.0, {"strategy": "centeredclip", "attack-fraction": 0.0}),
    ],
)
def test_each_run_gets_its_cell_settings(
    tmp_path: Path, strategy: str, attack: str, fraction: float, expected: dict[str, Any]
) -> None:
    # Prepare
    fake = FakeRun()
    flags = ["--strategies", strategy, "--attacks", attack, "--seeds", "3,4"]
    flags += ["--fractions", str(fraction or 0.2), "--max-update-norm", "7.5"]

    # Execute
    run_main(tmp_path, fake, *flags)

    # Assert: one run per seed, each with the cell's keys, its seed and all 10 hospitals;
    # a round aggregates once every honest hospital's update is in (attackers may be rejected)
    assert [call["seed"] for call in fake.calls] == [3, 4]
    for call in fake.calls:
        assert {key: call[key] for key in expected} == expected
        assert (call["attack"], call["attack-fraction"]) == (attack, fraction)
        assert call["min-available-nodes"] == call["min-evaluate-nodes"] == 10
        assert call["min-train-nodes"] == 10 - round(fraction * 10)
        assert (call["dataset"], call["partitioner"], call["dirichlet-alpha"]) == (
            "medmnist",
            "dirichlet",
            0.5,
        )
        assert call["num-server-rounds"] == 20
    if attack in ("label-flip", "alie", "none"):
        assert "attack-scale" not in fake.calls[0]
    if strategy != "fedavg+norm":
        assert "max-update-norm" not in fake.calls[0]


def test_every_cell_of_the_default_grid_is_a_valid_run_config(tmp_path: Path) -> None:
    # Prepare
    from common.config import parse_app_config
    from simulations.runner import run_config_with

    fake = FakeRun()

    # Execute
    payload = run_main(tmp_path, fake, "--seeds", "1")

    # Assert: 8 strategies × (1 + 5 attacks × 3 fractions), minus Bulyan at f = 2 and 3
    assert len(fake.calls) == 8 * 16 - 2 * 5
    assert len(payload["skipped"]) == 2 * 5
    for overrides in fake.calls:
        parse_app_config(run_config_with(overrides))


# -- results -----------------------------------------------------------------------------
def test_rows_are_means_and_sample_std_over_seeds(tmp_path: Path) -> None:
    # Prepare
    aucs = {("krum", "alie", 0.2, 1): 0.90, ("krum", "alie", 0.2, 2): 0.80}
    aucs[("krum", "alie", 0.2, 3)] = 0.85
    fake = FakeRun(aucs)

    # Execute
    payload = run_main(
        tmp_path, fake, "--strategies", "krum", "--attacks", "alie", "--fractions", "0.2",
        "--seeds", "1,2,3",
    )  # fmt: skip

    # Assert: mean 0.85; std √((0.05² + 0.05² + 0²) / 2) = 0.05
    [row] = payload["results"]
    assert (row["strategy"], row["attack"], row["fraction"]) == ("krum", "alie", 0.2)
    assert row["auc"] == pytest.approx(0.85)
    assert row["auc_std"] == pytest.approx(0.05)
    assert row["accuracy"] == pytest.approx(0.75)
    assert row["seeds"] == [1, 2, 3]


def test_one_seed_has_zero_std() -> None:
    # Execute
    row = aggregate(Cell("fedavg", "none", 0.0, 0, {}), [{"seed": 1, "auc": 0.7, "accuracy": 0.6}])

    # Assert
    assert (row["auc"], row["auc_std"], row["accuracy"]) == (0.7, 0.0, 0.6)


def test_the_json_has_the_documented_shape(tmp_path: Path) -> None:
    # Execute
    payload = run_main(
        tmp_path, FakeRun(), "--strategies", "fedavg,fedmedian", "--attacks", "none,scaling",
        "--fractions", "0.2", "--seeds", "1,2",
    )  # fmt: skip

    # Assert
    assert [(r["strategy"], r["attack"], r["fraction"]) for r in payload["results"]] == [
        ("fedavg", "none", 0.0),
        ("fedavg", "scaling", 0.2),
        ("fedmedian", "none", 0.0),
        ("fedmedian", "scaling", 0.2),
    ]
    types = {"strategy": str, "attack": str, "fraction": float}
    types |= {"auc": float, "auc_std": float, "accuracy": float}
    for row in payload["results"]:
        assert {key: type(row[key]) for key in types} == types


def test_finished_runs_are_skipped_and_unfinished_ones_start_again(tmp_path: Path) -> None:
    # Prepare: a full first pass, then one run's result removed and a stale file left there
    flags = ("--strategies", "fedavg", "--attacks", "none,sign-flip", "--fractions", "0.1")
    run_main(tmp_path, FakeRun(), *flags)
    unfinished = tmp_path / "work" / "fedavg" / "sign-flip-0.1" / "seed-2"
    (unfinished / robustness.RESULT_FILE).unlink()
    (unfinished / "stale.txt").write_text("old attempt", "utf-8")
    again = FakeRun()

    # Execute
    payload = run_main(tmp_path, again, *flags)

    # Assert
    assert [(c["attack"], c["seed"]) for c in again.calls] == [("sign-flip", 2)]
    assert not (unfinished / "stale.txt").exists()
    assert len(payload["results"]) == 2


def test_rejections_split_honest_and_attacking_hospitals() -> None:
    # Prepare
    def node(name: str, status: str) -> dict[str, str]:
        return {"name": name, "status": status}

    def train(first: str, second: str) -> dict[str, Any]:
        return {
            "nodes": {"train": {"1": node("hospital-0", first), "2": node("hospital-1", second)}}
        }

    rounds = [train("rejected", "ok"), train("rejected", "rejected")]
    metrics = {"rounds": rounds, "outcome": {"attackers": ["hospital-0"]}}

    # Execute / Assert
    assert rejections(metrics) == {"rejected_honest": 1, "rejected_attackers": 2}


# -- verdict -----------------------------------------------------------------------------
def row(strategy: str, attack: str, fraction: float, auc: float) -> dict[str, Any]:
    return {"strategy": strategy, "attack": attack, "fraction": fraction, "auc": auc}


def test_the_verdict_compares_the_best_defence_at_20_percent_with_clean_fedavg() -> None:
    # Prepare
    rows = [
        row("fedavg", "none", 0.0, 0.95),
        row("krum", "none", 0.0, 0.90),
        row("fedmedian", "none", 0.0, 0.94),
        row("fedavg", "sign-flip", 0.2, 0.99),  # not a defence
        row("fedmedian", "sign-flip", 0.2, 0.93),
        row("krum", "sign-flip", 0.2, 0.91),
        row("krum", "scaling", 0.2, 0.80),
        row("fedmedian", "scaling", 0.1, 0.99),  # another fraction
        row("krum", "alie", 0.2, 0.92),  # exactly 0.03 below: met
    ]

    # Execute
    lines = verdicts(rows)

    # Assert
    assert lines == [
        "sign-flip at 20%: best defence fedmedian AUC 0.930 vs clean FedAvg 0.950 "
        "(-0.020; goal within 0.03: met)",
        "scaling at 20%: best defence krum AUC 0.800 vs clean FedAvg 0.950 "
        "(-0.150; goal within 0.03: missed)",
        "alie at 20%: best defence krum AUC 0.920 vs clean FedAvg 0.950 "
        "(-0.030; goal within 0.03: met)",
        "cost with no attack (AUC − clean FedAvg): krum -0.050, fedmedian -0.010",
    ]


def test_no_verdict_without_clean_fedavg() -> None:
    assert verdicts([row("krum", "alie", 0.2, 0.9)]) == [
        "no verdict: clean FedAvg (fedavg, attack none) was not run"
    ]


def test_the_verdict_is_printed_and_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    fake = FakeRun({("fedavg", "none", 0.0, 1): 0.95, ("fedmedian", "gaussian", 0.2, 1): 0.9})

    # Execute
    payload = run_main(
        tmp_path, fake, "--strategies", "fedavg,fedmedian", "--attacks", "none,gaussian",
        "--fractions", "0.2", "--seeds", "1",
    )  # fmt: skip

    # Assert
    expected = (
        "gaussian at 20%: best defence fedmedian AUC 0.900 vs clean FedAvg 0.950 "
        "(-0.050; goal within 0.03: missed)"
    )
    assert payload["verdicts"][0] == expected
    assert f"- {expected}" in capsys.readouterr().out
    assert math.isclose(payload["clean_cost"]["fedmedian"], 0.9 - 0.95)

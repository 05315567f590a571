"""The secure-aggregation benchmark: options, metrics.json → rows, ratios, goals, JSON shape,
and the in-process SecAgg+ round against plain FedAvg (no simulation runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import secagg
from benchmarks._secagg_inprocess import common_scale, error_bound, measure
from benchmarks._secagg_rows import (
    ROW_KEYS,
    dropouts_for,
    goals,
    ratio_setting,
    ratios,
    run_summary,
)
from benchmarks._secagg_wire import SecAggSettings, secure_mean
from simulations.unreliable import fault_for

COLLECT = "collect_masked_vectors"


# -- factories ---------------------------------------------------------------------------
def node(status: str, stage: str | None = None) -> dict[str, Any]:
    return {"status": status} | ({"stage": stage} if stage else {})


def round_record(
    seconds: float,
    sent: int | None = 1000,
    received: int = 1000,
    hospitals: int = 4,
    failed: int = 0,
    stage: str = COLLECT,
) -> dict[str, Any]:
    nodes = {str(i): node("ok") for i in range(hospitals - failed)}
    nodes |= {str(100 + i): node("failed", stage) for i in range(failed)}
    record: dict[str, Any] = {
        "seconds": seconds,
        "participation": {"sampled": hospitals, "ok": hospitals - failed, "failed": failed}
        | {"timeout": 0, "rejected": 0},
        "nodes": {"train": nodes},
    }
    if sent is not None:
        record["train-bytes"] = {"sent": sent, "received": received, "hospitals": hospitals}
    return record


def metrics(rounds: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"rounds": rounds, "outcome": {"status": status}}


def row(hospitals: int, secure: bool, seconds: float | None, size: int | None) -> dict[str, Any]:
    return {
        "hospitals": hospitals,
        "secagg": secure,
        "seconds_per_round": seconds,
        "bytes_per_hospital": size,
        "max_abs_diff": None,
        "dropouts": 0,
        "completed": True,
    }


# -- options -------------------------------------------------------------------------------
def test_defaults() -> None:
    args = secagg.parse_args([])

    assert (args.hospital_counts, args.rounds, args.data) == ([5, 10, 20], 3, "")
    assert (args.dropout_hospitals, args.dropout_row, args.out) == (10, "simulation", "secagg.json")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--hospitals", "5,x"],
            "Invalid value for `--hospitals`. Expected comma-separated distinct integers ≥ 3. "
            "Received: '5,x'",
        ),
        (
            ["--hospitals", "2,10"],
            "Invalid value for `--hospitals`. Expected comma-separated distinct integers ≥ 3. "
            "Received: '2,10'",
        ),
        (
            ["--hospitals", "10,10"],
            "Invalid value for `--hospitals`. Expected comma-separated distinct integers ≥ 3. "
            "Received: '10,10'",
        ),
        (
            ["--rounds", "1"],
            "Invalid value for `--rounds`. Expected an integer ≥ 2 (round 1 pays the cold "
            "start). Received: 1",
        ),
        (
            ["--dropout-hospitals", "3"],
            "Invalid value for `--dropout-hospitals`. Expected 0 (no dropout row) or an "
            "integer ≥ 4. Received: 3",
        ),
        (
            ["--dropout-hospitals", "-5"],
            "Invalid value for `--dropout-hospitals`. Expected 0 (no dropout row) or an "
            "integer ≥ 4. Received: -5",
        ),
    ],
)
def test_bad_options_are_refused_in_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as refused:
        secagg.parse_args(argv)

    assert str(refused.value) == message


@pytest.mark.parametrize(("hospitals", "dropped"), [(4, 1), (5, 2), (10, 3), (20, 6)])
def test_dropouts_are_30_percent_halves_up(hospitals: int, dropped: int) -> None:
    assert dropouts_for(hospitals) == dropped


# -- metrics.json → row ----------------------------------------------------------------------
def test_summary_of_a_completed_run(tmp_path: Path) -> None:
    # Prepare: round 1 is the cold start; bytes per hospital 1000, 1000, 600
    document = metrics(
        [
            round_record(30.0, 1000, 3000),
            round_record(4.0, 2000, 2000, failed=3),
            round_record(6.0, 1200, 1200, failed=2),
        ]
    )
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(document), "utf-8")

    # Execute
    summary = run_summary(json.loads(path.read_text("utf-8")), rounds_requested=3)

    # Assert
    assert summary["seconds_per_round"] == pytest.approx(5.0)
    assert summary["bytes_per_hospital"] == round((1000 + 1000 + 600) / 3)
    assert (summary["dropouts"], summary["dropouts_per_round"]) == (3, [0, 3, 2])
    assert summary["dropout_stages"] == [COLLECT]
    assert summary["completed"] is True


@pytest.mark.parametrize(
    ("document", "requested", "expected"),
    [
        (metrics([round_record(9.0)]), 1, (9.0, 500, True)),  # one round: it is the mean
        (metrics([round_record(9.0), round_record(3.0)]), 3, (3.0, 500, False)),  # short
        (metrics([round_record(9.0), round_record(3.0)], "stopped"), 2, (3.0, 500, False)),
        (
            metrics([round_record(9.0, sent=None), round_record(3.0, sent=None)]),
            2,
            (3.0, None, True),
        ),
        ({}, 2, (None, None, False)),  # a run that left no metrics.json
    ],
    ids=["one-round", "short", "stopped", "no-train-bytes", "nothing"],
)
def test_summary_edge_cases(
    document: dict[str, Any], requested: int, expected: tuple[Any, Any, bool]
) -> None:
    summary = run_summary(document, requested)

    got = (summary["seconds_per_round"], summary["bytes_per_hospital"], summary["completed"])
    assert got == expected


def test_a_failed_run_is_reported_from_what_it_left(tmp_path: Path) -> None:
    # Prepare: the child wrote one round, then failed
    def failing(overrides: dict[str, Any], hospitals: int, run_dir: Path) -> dict[str, Any]:
        run_dir.mkdir(parents=True)
        document = metrics([round_record(8.0, failed=4)], "stopped")
        (run_dir / "metrics.json").write_text(json.dumps(document), "utf-8")
        raise RuntimeError("simulation failed with exit code 1; log x\ntail")

    # Execute
    summary = secagg.one_run(failing, {"num-server-rounds": 3, "seed": 1}, 4, tmp_path / "r")

    # Assert
    assert (summary["completed"], summary["dropouts"], summary["seconds_per_round"]) == (
        False,
        4,
        8.0,
    )


# -- ratios and goals ---------------------------------------------------------------------------
def test_ratios_at_10_hospitals() -> None:
    rows = [
        row(5, False, 2.0, 100),
        row(5, True, 9.0, 900),
        row(10, False, 5.0, 1000),
        row(10, True, 7.5, 1030),
    ]

    at = ratio_setting(rows)

    assert at == 10
    assert ratios(rows, at) == {"ratio_seconds": 1.5, "ratio_bytes": pytest.approx(1.03)}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([row(5, False, 1, 1), row(5, True, 1, 1), row(20, False, 1, 1), row(20, True, 1, 1)], 20),
        ([row(10, False, 1, 1), row(20, True, 1, 1)], None),
    ],
    ids=["largest-pair", "no-pair"],
)
def test_ratio_setting_without_a_pair_at_10(
    rows: list[dict[str, Any]], expected: int | None
) -> None:
    assert ratio_setting(rows) == expected


def test_ratios_are_none_where_a_value_is_missing() -> None:
    rows = [row(10, False, 5.0, None), row(10, True, None, 1030)]

    assert ratios(rows, 10) == {"ratio_seconds": None, "ratio_bytes": None}


def goal_payload(seconds: float, size: float) -> dict[str, Any]:
    return {"ratio_seconds": seconds, "ratio_bytes": size, "ratio_hospitals": 10}


@pytest.mark.parametrize(
    ("payload", "diff", "stages", "verdicts"),
    [
        (goal_payload(1.2, 1.03), 1e-9, [COLLECT], ["met", "met", "met", "met"]),
        (goal_payload(2.5, 1.6), 1e-9, [COLLECT], ["missed", "missed", "met", "met"]),
        (goal_payload(1.2, 1.03), 3e-9, [COLLECT], ["met", "met", "missed", "met"]),
        (goal_payload(1.2, 1.03), 1e-9, ["setup"], ["met", "met", "met", "missed"]),
    ],
    ids=["all-met", "too-slow-and-big", "above-bound", "dropped-before-masking"],
)
def test_goals(
    payload: dict[str, Any], diff: float, stages: list[str], verdicts: list[str]
) -> None:
    # Prepare
    aggregation = [{"completed": True, "max_abs_diff": diff, "bound": 2e-9}]
    dropout = row(10, True, 6.0, 1000) | {"dropouts": 3, "completed": True}

    # Execute
    lines = goals(payload, aggregation, dropout, stages)

    # Assert
    assert [line.rsplit(": ", 1)[1] for line in lines] == verdicts


# -- the whole command with fake runs: JSON shape ---------------------------------------------
class FakeRun:
    """A simulation's metrics.json: SecAgg+ 1.4× the seconds and 1.03× the bytes of plain;
    with ``dropout-rate``, exactly the hospitals ``fault_for`` drops fail at collect."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, overrides: dict[str, Any], hospitals: int, run_dir: Path) -> dict[str, Any]:
        self.calls.append(overrides)
        secure = overrides["secure-aggregation"]
        rounds = []
        for server_round in range(1, overrides["num-server-rounds"] + 1):
            failed = sum(
                fault_for(overrides["seed"], server_round, p, rate, 0.0) == "drop"
                for p in range(hospitals)
                if (rate := overrides.get("dropout-rate", 0.0))
            )
            size = hospitals * (1030 if secure else 1000)
            rounds.append(round_record(7.0 if secure else 5.0, size, size, hospitals, failed))
        return metrics(rounds)


def fake_measure(overrides: dict[str, Any], hospitals: int, dropouts: int) -> dict[str, Any]:
    return {"hospitals": hospitals, "dropouts": dropouts, "completed": True} | {
        "max_abs_diff": 1e-9 * hospitals,
        "bound": 1e-8 * hospitals,
        "seconds": 0.5,
        "bytes_per_hospital": 4000,
    }


def run_main(tmp_path: Path, run: FakeRun, *flags: str) -> dict[str, Any]:
    out = tmp_path / "secagg.json"
    argv = ["--out", str(out), "--work-dir", str(tmp_path / "work"), *flags]
    assert secagg.main(argv, run=run, measure=fake_measure) == 0
    payload: dict[str, Any] = json.loads(out.read_text("utf-8"))
    return payload


def test_json_shape_and_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    payload = run_main(tmp_path, FakeRun())

    # Assert: 3 settings × (plain, SecAgg+), then the simulated dropout row
    results = payload["results"]
    assert [(r["hospitals"], r["secagg"]) for r in results] == [
        (5, False), (5, True), (10, False), (10, True), (20, False), (20, True), (10, True)
    ]  # fmt: skip
    assert all(tuple(r) == ROW_KEYS for r in results)
    assert [r["max_abs_diff"] for r in results] == [None, 5e-9, None, 1e-8, None, 2e-8, 1e-8]
    assert results[-1]["dropouts"] == 3
    assert results[-1]["completed"] is True
    assert (payload["ratio_seconds"], payload["ratio_bytes"]) == (1.4, 1.03)
    assert payload["dropout_row"] == "simulation"
    assert [line.rsplit(": ", 1)[1] for line in payload["goals"]] == ["met"] * 4
    assert "| 10        | SecAgg+ (dropouts)" in capsys.readouterr().out


def test_runs_get_their_settings(tmp_path: Path) -> None:
    # Prepare
    run = FakeRun()

    # Execute
    run_main(tmp_path, run, "--hospitals", "5,10", "--rounds", "2")

    # Assert: every hospital required, except the 3 of 10 that drop in the dropout row
    keys = ("secure-aggregation", "min-train-nodes", "min-available-nodes", "dataset")
    assert [tuple(c[k] for k in keys) for c in run.calls] == [
        (False, 5, 5, "synthetic"),
        (True, 5, 5, "synthetic"),
        (False, 10, 10, "synthetic"),
        (True, 10, 10, "synthetic"),
        (True, 7, 10, "synthetic"),
    ]
    dropout = run.calls[-1]
    assert (dropout["dropout-rate"], dropout["straggler-rate"]) == (0.3, 0.0)
    for server_round in (1, 2):
        faults = [fault_for(dropout["seed"], server_round, p, 0.3, 0.0) for p in range(10)]
        assert faults.count("drop") == 3


def test_in_process_dropout_row(tmp_path: Path) -> None:
    # Prepare
    run = FakeRun()

    # Execute
    payload = run_main(tmp_path, run, "--hospitals", "10", "--dropout-row", "in-process")

    # Assert: no simulation for it; its numbers are the in-process round's
    assert len(run.calls) == 2
    assert payload["dropout_row"] == "in-process"
    assert payload["results"][-1] == {
        "hospitals": 10,
        "secagg": True,
        "seconds_per_round": 0.5,
        "bytes_per_hospital": 4000,
        "max_abs_diff": 1e-8,
        "dropouts": 3,
        "completed": True,
    }


# -- the in-process round: Flower's SecAgg+ against plain FedAvg -----------------------------
def updates_of(hospitals: int, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.normal(0.0, 1e-3, (40, 3)), rng.normal(0.0, 1e-3, (5,))] for _ in range(hospitals)]


def test_common_scale_puts_the_largest_value_at_an_eighth_of_the_range() -> None:
    updates = [[np.array([0.01, -0.002])], [np.array([0.004])]]

    # hospital 0 has the largest weight (ratio 1): 0.01 · s = 8 / 8
    assert common_scale(updates, [30.0, 10.0], clip=8.0) == pytest.approx(100.0)


def test_error_bound_of_equal_weights_is_one_step_per_hospital() -> None:
    settings = SecAggSettings(clipping_range=8.0, quantization_range=2**22)
    step = 16.0 / 2**22
    ulps = 16 * np.finfo(np.float64).eps * 8.0

    bound = error_bound(updates_of(2), [5.0, 5.0], 1.0, 5.0, settings)

    # 2 hospitals · (step + ulps) / (scale 1 · weights 1 + 1)
    assert bound == pytest.approx(step + ulps)


@pytest.mark.parametrize("drop", [set(), {3, 4}], ids=["all", "two-drop-at-collect"])
def test_secure_mean_is_plain_fedavg_within_the_bound(drop: set[int]) -> None:
    # Prepare
    updates, weights = updates_of(5), [120.0, 180.0, 240.0, 300.0, 360.0]
    settings, scale = SecAggSettings(), 1000.0
    kept = [i for i in range(5) if i not in drop]

    # Execute
    mean, sent = secure_mean(
        [[a * scale for a in u] for u in updates], weights, drop, settings, max(weights)
    )

    # Assert: against numpy's weighted average of the hospitals in the sum
    assert mean is not None
    assert sent > 0
    bound = error_bound(
        [updates[i] for i in kept], [weights[i] for i in kept], scale, 360.0, settings
    )
    for index, secure in enumerate(mean):
        plain = np.average(
            [updates[i][index] for i in kept], axis=0, weights=[weights[i] for i in kept]
        )
        assert np.max(np.abs(secure / scale - plain)) <= bound


def test_too_many_dropouts_halt_the_round() -> None:
    # 3 of 5 drop: 2 survivors hold fewer shares than the threshold round(0.67 · 5) = 3
    measured = measure(updates_of(5), [1.0, 2.0, 3.0, 4.0, 5.0], dropouts=3)

    assert (measured.completed, measured.max_abs_diff) == (False, None)

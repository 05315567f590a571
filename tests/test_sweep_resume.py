"""The sweep runs every run once, skips completed runs when restarted and runs the rest again
(a fake child runner stands in for the simulation)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from simulations.sweep import main, run_sweep
from simulations.sweep_file import PlannedRun, Sweep
from simulations.sweep_runs import default_jobs

SWEEP = Sweep(
    hospitals=2,
    seeds=(1, 2),
    base={"num-server-rounds": 2},
    grid={"strategy": ["fedavg", "krum"]},
)
NAMES = [
    "strategy=fedavg/seed=1",
    "strategy=fedavg/seed=2",
    "strategy=krum/seed=1",
    "strategy=krum/seed=2",
]


class FakeChild:
    """Writes a ``metrics.json`` with the status chosen for each run; records each call."""

    def __init__(self, statuses: dict[str, str] | None = None) -> None:
        self.statuses = statuses or {}
        self.calls: list[str] = []

    def __call__(self, run: PlannedRun, run_dir: Path) -> int:
        self.calls.append(run.name)
        status = self.statuses.get(run.name, "completed")
        rounds = [
            {"round": r, "evaluate": {"auc": 0.5 + 0.1 * r + 0.01 * run.seed}} for r in (1, 2)
        ]
        if status == "killed":  # a process that died mid-run: metrics.json says running
            (run_dir / "metrics.json").write_text(
                json.dumps({"rounds": rounds[:1], "outcome": {"status": "running"}})
            )
            return -9
        outcome = (
            {"status": status} if status == "completed" else {"status": status, "message": "boom"}
        )
        (run_dir / "metrics.json").write_text(json.dumps({"rounds": rounds, "outcome": outcome}))
        (run_dir / "attempt.txt").write_text(str(len(self.calls)))
        return 0 if status == "completed" else 1


def sweep(out: Path, child: FakeChild, jobs: int = 2) -> int:
    return run_sweep(SWEEP, out, child, jobs=jobs, say=lambda _: None)


def statuses(out: Path) -> dict[str, str]:
    with (out / "results.csv").open(newline="") as handle:
        return {
            f"strategy={row['strategy']}/seed={row['seed']}": row["status"]
            for row in csv.DictReader(handle)
        }


def test_every_run_runs_once(tmp_path: Path) -> None:
    child = FakeChild()

    code = sweep(tmp_path, child)

    assert code == 0
    assert sorted(child.calls) == NAMES
    assert statuses(tmp_path) == dict.fromkeys(NAMES, "completed")


def test_restart_skips_completed_and_reruns_the_rest_from_scratch(tmp_path: Path) -> None:
    first = FakeChild({NAMES[1]: "failed", NAMES[2]: "killed"})
    first_code = sweep(tmp_path, first)
    first_statuses = statuses(tmp_path)
    second = FakeChild()

    second_code = sweep(tmp_path, second)

    assert first_code == 1
    assert first_statuses == {
        NAMES[0]: "completed",
        NAMES[1]: "failed",
        NAMES[2]: "failed",  # killed: metrics.json still `running`, the child exited non-zero
        NAMES[3]: "completed",
    }
    assert sorted(second.calls) == [NAMES[1], NAMES[2]]
    assert second_code == 0
    assert statuses(tmp_path) == dict.fromkeys(NAMES, "completed")
    # the skipped runs keep their files; the re-run ones were started in an empty directory
    assert (tmp_path / NAMES[0] / "attempt.txt").is_file()
    assert json.loads((tmp_path / NAMES[1] / "sweep-run.json").read_text())["exit-code"] == 0


def test_third_run_of_a_finished_sweep_runs_nothing(tmp_path: Path) -> None:
    sweep(tmp_path, FakeChild())
    child = FakeChild()

    code = sweep(tmp_path, child)

    assert (code, child.calls) == (0, [])


def test_bad_file_runs_nothing_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text('hospitals = 2\nseeds = [1]\n[grid]\nstratgy = ["krum"]\n')

    code = main([str(path), "--out", str(tmp_path / "out")])

    assert code == 1
    assert capsys.readouterr().err == (
        "error: Unknown config key `stratgy`. Expected one of the keys declared in "
        "[tool.flwr.app.config] of pyproject.toml. Did you mean `strategy`?\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("hospitals", "cpus_per_hospital", "cores", "jobs"),
    [(2, 1.0, 8, 4), (3, 1.0, 8, 2), (10, 1.0, 2, 1), (2, 0.5, 2, 2), (1, 1.0, 1, 1)],
)
def test_default_jobs_share_the_cores(
    hospitals: int, cpus_per_hospital: float, cores: int, jobs: int
) -> None:
    assert default_jobs(hospitals, cpus_per_hospital, cores) == jobs


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--jobs=0", "error: Invalid value for `--jobs`. Expected an integer ≥ 1. Received: 0\n"),
        (
            "--cpus-per-hospital=0",
            "error: Invalid value for `--cpus-per-hospital`. Expected a number > 0. "
            "Received: 0.0\n",
        ),
    ],
)
def test_bad_flag_is_a_usage_error(
    tmp_path: Path, flag: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(tmp_path / "sweep.toml"), flag])

    assert (code, capsys.readouterr().err) == (2, message)

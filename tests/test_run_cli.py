"""`fedclinic run`: the outcome decision (pure) and the wrapper around a stand-in `flwr`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from cli.main import main
from deployment import run_cli
from deployment.run_outcome import (
    FlowerRun,
    Outcome,
    Verdict,
    box_message,
    decide,
    logged_run_dir,
    parse_ls_json,
    read_outcome,
    started_run_id,
)

RUN_ID = 77
WAIT = "Only 2 of the 3 required hospitals connected within `node-wait-timeout` (3 s)."
FLOWER_WAIT = f"Simulation failed with exception: {WAIT}"
# a real Flower 1.42 error panel (stderr of `flwr run . nosuch --stream`)
PANEL = [
    "╭─ Error ──────────────────────────────────────────────────────────────────────╮\n",
    "│ An unexpected error occurred while reading the Flower configuration file     │\n",
    "│ (/tmp/h/config.toml). SuperLink connection 'nosuch' not found in the         │\n",
    "│ Flower configuration file (/tmp/h/config.toml).                              │\n",
    "╰──────────────────────────────────────────────────────────────────────────────╯\n",
]
PANEL_TEXT = (
    "An unexpected error occurred while reading the Flower configuration file "
    "(/tmp/h/config.toml). SuperLink connection 'nosuch' not found in the "
    "Flower configuration file (/tmp/h/config.toml)."
)


def flower(status: str, details: str = "") -> FlowerRun:
    return FlowerRun(status, details)


COMPLETED = Outcome("completed")
FAILED = Outcome("failed", WAIT)
RUNNING = Outcome("running")

# (Flower's status, metrics.json outcome, flwr ls error) -> (exit code, reason)
DECISIONS = [
    pytest.param(flower("finished:completed"), COMPLETED, "", 0, "", id="both-completed"),
    pytest.param(flower("finished:completed"), None, "", 0, "", id="completed-no-metrics"),
    pytest.param(flower("finished:completed"), FAILED, "", 1, WAIT, id="completed-but-failed"),
    pytest.param(
        flower("finished:completed"),
        RUNNING,
        "",
        1,
        "Flower reports the run completed but metrics.json says `running`",
        id="completed-but-running",
    ),
    pytest.param(flower("finished:failed", FLOWER_WAIT), FAILED, "", 1, WAIT, id="both-failed"),
    pytest.param(
        flower("finished:failed", FLOWER_WAIT), None, "", 1, FLOWER_WAIT, id="failed-no-metrics"
    ),
    pytest.param(
        flower("finished:failed", "ServerApp failed with exception: boom"),
        RUNNING,
        "",
        1,
        "ServerApp failed with exception: boom",
        id="failed-metrics-running",
    ),
    pytest.param(
        flower("finished:failed", "ServerApp failed with exception: boom"),
        COMPLETED,
        "",
        1,
        "ServerApp failed with exception: boom",
        id="failed-metrics-completed",
    ),
    pytest.param(
        flower("finished:failed"),
        None,
        "",
        1,
        "Flower reports `finished:failed`; see `flwr log 77`",
        id="failed-without-details",
    ),
    pytest.param(
        flower("finished:stopped"),
        RUNNING,
        "",
        1,
        "the run was stopped at the SuperLink (`flwr stop 77`)",
        id="stopped",
    ),
    pytest.param(
        flower("running"),
        RUNNING,
        "",
        1,
        "the log stream ended while the run is `running` at the SuperLink; "
        "follow it with `flwr log 77`",
        id="still-running",
    ),
    pytest.param(None, COMPLETED, "[code: 16] Run ID not found.", 0, "", id="no-status-completed"),
    pytest.param(None, FAILED, "[code: 16] Run ID not found.", 1, WAIT, id="no-status-failed"),
    pytest.param(
        None,
        None,
        "Connection to the SuperLink is unavailable.",
        1,
        "the run's status could not be read from the SuperLink (Connection to the SuperLink "
        "is unavailable.); see `flwr log 77`",
        id="no-status-no-metrics",
    ),
]


@pytest.mark.parametrize(("run", "outcome", "error", "code", "reason"), DECISIONS)
def test_decide_combines_flower_status_and_metrics_outcome(
    run: FlowerRun | None, outcome: Outcome | None, error: str, code: int, reason: str
) -> None:
    verdict = decide(RUN_ID, run, outcome, error)

    assert verdict == Verdict(code, reason)


@pytest.mark.parametrize(
    ("verdict", "run_dir", "lines"),
    [
        (Verdict(0), Path("/r/1"), ["run completed", "run directory: /r/1"]),
        (Verdict(1, WAIT), Path("/r/1"), [f"run failed: {WAIT}", "run directory: /r/1"]),
        (Verdict(1, WAIT), None, [f"run failed: {WAIT}", "run directory: unknown"]),
    ],
)
def test_verdict_lines(verdict: Verdict, run_dir: Path | None, lines: list[str]) -> None:
    assert verdict.lines(run_dir) == lines


@pytest.mark.parametrize(
    ("line", "run_id"),
    [
        ("Successfully started run 14468743938314114769\n", 14468743938314114769),
        ("\x1b[32mSuccessfully started run 5\x1b[0m\n", 5),
        ("Starting logstream for run_id `5`\n", None),
    ],
)
def test_started_run_id(line: str, run_id: int | None) -> None:
    assert started_run_id(line) == run_id


@pytest.mark.parametrize(
    ("line", "path"),
    [
        ("\x1b[92mINFO \x1b[0m:      [fedclinic] run directory: /srv/runs/a b\n", "/srv/runs/a b"),
        ("INFO :      [fedclinic] report: /srv/runs/a/report.md\n", None),
    ],
)
def test_logged_run_dir(line: str, path: str | None) -> None:
    assert logged_run_dir(line) == (Path(path) if path else None)


def test_box_message_joins_a_flower_error_panel_into_one_line() -> None:
    assert box_message(["Using SuperLink: x\n", *PANEL]) == PANEL_TEXT


def ls_json(status: str, details: str = "", run_id: int = RUN_ID) -> str:
    run = {"run-id": str(run_id), "status": status, "status-details": details}
    return json.dumps({"success": True, "runs": [run]}, indent=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ls_json("finished:failed", FLOWER_WAIT), FlowerRun("finished:failed", FLOWER_WAIT)),
        ("🔍 noise\n" + ls_json("running"), FlowerRun("running", "")),
    ],
)
def test_parse_ls_json(text: str, expected: FlowerRun) -> None:
    assert parse_ls_json(text, RUN_ID) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            json.dumps(
                {"success": False, "error-message": "Using x\n\n[code: 16] Run ID not found."}
            ),
            "Using x [code: 16] Run ID not found.",
        ),
        (ls_json("running", run_id=5), "`flwr ls` did not list run 77"),
        ("Traceback ...", "`flwr ls` printed no JSON: 'Traceback ...'"),
    ],
)
def test_parse_ls_json_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_ls_json(text, RUN_ID)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, None),
        ("{not json", None),
        ('{"rounds": []}', None),
        ('{"rounds": [], "outcome": {"status": "completed"}}', COMPLETED),
        (json.dumps({"rounds": [], "outcome": {"status": "failed", "message": WAIT}}), FAILED),
    ],
)
def test_read_outcome(tmp_path: Path, content: str | None, expected: Outcome | None) -> None:
    if content is not None:
        (tmp_path / "metrics.json").write_text(content, encoding="utf-8")

    assert read_outcome(tmp_path) == expected


@pytest.mark.parametrize(
    ("run_config", "expected"),
    [
        (["num-server-rounds=1 run-dir='/srv/runs/x'"], Path("/srv/runs/x")),
        (["run-dir='relative/x'"], None),
        (["num-server-rounds=1"], None),
        ([], None),
    ],
)
def test_configured_run_dir(run_config: list[str], expected: Path | None) -> None:
    assert run_cli.configured_run_dir(run_config) == expected


# A stand-in `flwr`: `run` prints what Flower 1.42 prints, `ls` answers from FAKE_STATUS.
FAKE_FLWR = """\
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(json.dumps(argv) + "\\n")
if argv[0] == "run" and os.environ.get("FAKE_PANEL"):
    print("Using SuperLink: dead (127.0.0.1:1)")
    sys.stderr.write(os.environ["FAKE_PANEL"])
    sys.exit(1)
if argv[0] == "run":
    print("Successfully started run 77")
    sys.stderr.write("INFO :      Starting logstream for run_id `77`\\n")
    print("INFO :      [fedclinic] run directory: " + os.environ["FAKE_RUN_DIR"])
    print("INFO :      round 1 done")
    sys.stderr.write(os.environ.get("FAKE_PANEL_AFTER", ""))
    sys.exit(1 if os.environ.get("FAKE_PANEL_AFTER") else 0)
run = {"run-id": "77", "status": os.environ["FAKE_STATUS"], "status-details": "details"}
print(json.dumps({"success": True, "runs": [run]}))
"""


@pytest.fixture
def fake_flwr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install the stand-in; returns the run directory it reports."""
    script = tmp_path / "flwr"
    script.write_text(f"#!{sys.executable}\n{FAKE_FLWR}", encoding="utf-8")
    script.chmod(0o755)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(run_cli, "flwr_executable", lambda: str(script))
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_RUN_DIR", str(run_dir))
    monkeypatch.setenv("FAKE_STATUS", "finished:failed")
    return run_dir


def calls(tmp_path: Path) -> list[list[str]]:
    lines = (tmp_path / "calls.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


FEDERATION = ("--federation-config", "num-supernodes=2")


def write_outcome(run_dir: Path, outcome: dict[str, str]) -> None:
    (run_dir / "metrics.json").write_text(json.dumps({"rounds": [], "outcome": outcome}))


def test_failed_run_streams_then_exits_1_with_reason_and_directory(
    fake_flwr: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_outcome(fake_flwr, {"status": "failed", "message": WAIT})

    code = main(["run", ".", "hq", "-c", "num-server-rounds=1", *FEDERATION])

    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines() == [
        "Successfully started run 77",
        f"INFO :      [fedclinic] run directory: {fake_flwr}",
        "INFO :      round 1 done",
    ]
    assert err.splitlines() == [
        "INFO :      Starting logstream for run_id `77`",
        f"run failed: {WAIT}",
        f"run directory: {fake_flwr}",
    ]
    assert calls(tmp_path) == [
        ["run", ".", "hq", "--stream", *("--run-config", "num-server-rounds=1"), *FEDERATION],
        ["ls", "hq", "--run-id", "77", "--format", "json"],
    ]


def test_completed_run_exits_0(
    fake_flwr: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_STATUS", "finished:completed")
    write_outcome(fake_flwr, {"status": "completed"})

    code = main(["run"])

    out, _ = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[-2:] == ["run completed", f"run directory: {fake_flwr}"]


def test_flwr_error_is_one_line(
    fake_flwr: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_PANEL", "".join(PANEL))

    code = main(["run", ".", "nosuch"])

    _, err = capsys.readouterr()
    assert code == 1
    assert err == f"error: flwr run: {PANEL_TEXT}\n"


@pytest.mark.parametrize("argv", [["run", "--bogus"], ["run", "a", "b", "c"]])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)

    assert caught.value.code == 2


def test_flwr_error_after_the_start_is_reported_then_the_run_decided(
    fake_flwr: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_PANEL_AFTER", "".join(PANEL))
    write_outcome(fake_flwr, {"status": "failed", "message": WAIT})

    code = main(["run"])

    _, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines()[-3:] == [
        f"flwr run: {PANEL_TEXT}",
        f"run failed: {WAIT}",
        f"run directory: {fake_flwr}",
    ]

# ruff: noqa: E501  (tables of exact one-line messages)
"""Every failure of ``fedclinic`` and ``python -m simulations`` is one line and a non-zero exit."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cli.boundary import failure_line, run_reporting_failures
from cli.main import main
from common.errors import ConfigError
from common.manifest import project_root
from simulations.__main__ import main as simulations_main
from simulations.__main__ import run_config_overrides


def _toml_error() -> tomllib.TOMLDecodeError:
    try:
        tomllib.loads("[a")
    except tomllib.TOMLDecodeError as error:
        return error
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/srv/pki/ca.key"), "Permission denied: /srv/pki/ca.key"),
        (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"), "Invalid cross-device link: /a -> /b"),
        (OSError("socket closed"), "socket closed"),
        (json.JSONDecodeError("Expecting value", "{", 1), "Invalid JSON: Expecting value: line 1 column 2 (char 1)"),
        (_toml_error(), "Invalid TOML: Expected ']' at the end of a table declaration (at end of document)"),
        (ConfigError("first\nsecond"), "first second"),
    ],
    ids=["permission", "two-paths", "no-path", "json", "toml", "multi-line"],
)  # fmt: skip
def test_failure_is_one_line_saying_what_and_where(error: BaseException, line: str) -> None:
    assert failure_line(error) == line


@pytest.mark.parametrize(
    ("error", "code", "err"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x"), 1, "error: No such file or directory: /x\n"),
        (KeyboardInterrupt(), 130, "interrupted\n"),
    ],
)  # fmt: skip
def test_boundary_turns_failures_into_exit_codes(
    error: BaseException, code: int, err: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    def fail() -> int:
        raise error

    # Execute
    result = run_reporting_failures(fail)

    # Assert
    assert result == code
    assert capsys.readouterr().err == err


def test_a_bug_keeps_its_traceback() -> None:
    def bug() -> int:
        raise KeyError("not a person's mistake")

    with pytest.raises(KeyError):
        run_reporting_failures(bug)


def test_unwritable_pki_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "pki"

    # Execute
    code = main(["pki", "init", str(target)])

    # Assert
    assert code == 1
    assert capsys.readouterr().err == f"error: Not a directory: {target}\n"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("metrics.json", '{"rounds": [', "Invalid JSON in {path}: Expecting value: line 1 column 13 (char 12)."),
        ("metrics.json", "[]", "Invalid content in {path}. Expected a JSON object with a `rounds` list. Received: list"),
        ("metrics.json", '{"outcome": {}}', "Invalid content in {path}. Expected a JSON object with a `rounds` list. Received: keys ['outcome']"),
        ("config.json", "nul", "Invalid JSON in {path}: Expecting value: line 1 column 1 (char 0)."),
        ("config.json", '"text"', "Invalid content in {path}. Expected a JSON object. Received: str"),
    ],
    ids=["metrics-truncated", "metrics-list", "metrics-no-rounds", "config-corrupt", "config-string"],
)  # fmt: skip
def test_report_of_a_corrupt_run_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, message: str
) -> None:
    # Prepare
    (tmp_path / "metrics.json").write_text('{"rounds": []}', encoding="utf-8")
    (tmp_path / name).write_text(text, encoding="utf-8")

    # Execute
    code = main(["report", str(tmp_path)])

    # Assert
    assert code == 1
    assert capsys.readouterr().err == f"error: {message.format(path=tmp_path / name)}\n"
    assert not (tmp_path / "report.md").exists()


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "metrics.json").write_text("{", encoding="utf-8")

    # Execute
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "report", str(tmp_path)],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Assert
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: Invalid JSON in {tmp_path / 'metrics.json'}: Expecting property name enclosed "
        "in double quotes: line 1 column 2 (char 1)."
    ]


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["num-server-rounds=3 strategy='fedprox'"], {"num-server-rounds": 3, "strategy": "fedprox"}),
        (["run-dir='/tmp/a b'", "seed=1"], {"run-dir": "/tmp/a b", "seed": 1}),
        ([], {}),
    ],
)  # fmt: skip
def test_run_config_texts_are_parsed_as_flower_does(
    texts: list[str], expected: dict[str, object]
) -> None:
    assert run_config_overrides(texts) == expected


@pytest.mark.parametrize(
    "text",
    ["strategy = 'fedprox'", "seed", "seed=1 rounds", "seed=[1"],
)
def test_run_config_text_flower_would_skip_is_refused(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        run_config_overrides([text])

    assert str(caught.value) == (
        "Invalid value for `--run-config`. Expected space-separated key=value pairs such as "
        f"\"num-server-rounds=3 strategy='fedprox'\". Received: {text!r}"
    )


@pytest.mark.parametrize(
    ("argv", "code", "err"),
    [
        (["--run-config", "foo=1"], 1, "error: Unknown config key `foo`. Expected one of the keys declared in [tool.flwr.app.config] of pyproject.toml.\n"),
        (["--run-config", "image-size=12"], 1, "error: Invalid value for `image-size`. Expected an integer ≥ 16 when `dataset` is 'synthetic'. Received: 12\n"),
        (["--run-config", "/nonexistent/run.toml"], 1, "error: No such file or directory: /nonexistent/run.toml\n"),
        (["--hospitals", "0"], 2, "error: Invalid value for `--hospitals`. Expected an integer ≥ 1. Received: 0\n"),
    ],
    ids=["unknown-key", "cross-field", "missing-toml", "hospitals"],
)  # fmt: skip
def test_simulations_fail_in_one_line_before_simulating(
    argv: list[str], code: int, err: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = simulations_main(argv)

    assert result == code
    assert capsys.readouterr().err.splitlines()[-1:] == err.splitlines()

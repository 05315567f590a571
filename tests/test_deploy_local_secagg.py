"""``fedclinic deploy local --secure-aggregation``: the flag, its check and the run config it
gives ``flwr run`` (no process is started); and one real deployment (e2e)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from rich.console import Console

from cli.main import main
from deployment.deploy_cli import DeployOptions, _options, deploy_local, register, run_config_for
from deployment.deploy_local import app_config, federation_config, run_config_overrides


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["deploy", "local", *argv])


def options(tmp_path: Path, secure: bool) -> DeployOptions:
    return DeployOptions(3, 2, 30, tmp_path, 60.0, secure_aggregation=secure)


@pytest.mark.parametrize(("argv", "secure"), [((), False), (("--secure-aggregation",), True)])
def test_flag_reaches_the_options(tmp_path: Path, argv: tuple[str, ...], secure: bool) -> None:
    args = parsed(*argv, "--workdir", str(tmp_path / "work"))

    assert _options(args).secure_aggregation is secure


def test_secure_run_config_is_the_plain_one_with_secure_aggregation(tmp_path: Path) -> None:
    # Prepare
    plain = federation_config(3, 2, 30, tmp_path / "run")

    # Execute
    secure = run_config_for(options(tmp_path, True), tmp_path)

    # Assert: the same federation; `flwr run` is told `secure-aggregation=true`
    assert secure == {**plain, "secure-aggregation": True}
    assert "secure-aggregation=true" in run_config_overrides(secure).split()
    assert app_config(secure).federation.secure_aggregation is True


def test_without_the_flag_the_run_config_is_unchanged(tmp_path: Path) -> None:
    run_config = run_config_for(options(tmp_path, False), tmp_path)

    assert run_config == federation_config(3, 2, 30, tmp_path / "run")
    assert app_config(run_config).federation.secure_aggregation is False


def test_too_few_sites_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["deploy", "local", "--secure-aggregation", "--sites", "2"])

    assert code == 1
    expected = (
        "error: Invalid value for `--sites`. Expected an integer ≥ 3 with "
        "--secure-aggregation. Received: 2\n"
    )
    assert capsys.readouterr().err == expected


def test_help_documents_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["deploy", "local", "--help"])

    assert done.value.code == 0
    assert "--secure-aggregation" in capsys.readouterr().out


@pytest.mark.e2e
def test_three_real_sites_complete_a_secagg_round(tmp_path: Path) -> None:
    # Prepare: SuperLink (TLS, SuperNode auth) and 3 SuperNodes on 127.0.0.1
    workdir = tmp_path / "deploy"
    secure = DeployOptions(3, 1, 30, workdir, 420.0, secure_aggregation=True)

    # Execute
    with (tmp_path / "deploy.out").open("w") as out:
        deployment = deploy_local(secure, Console(file=out, width=200))

    # Assert: every site's update is in the one masked sum, nothing was dropped
    metrics = json.loads((deployment.result.run_dir / "metrics.json").read_text("utf-8"))
    (record,) = metrics["rounds"]
    block = record["secure-aggregation"]
    assert block["contributors"] == 3
    assert block["dropouts"] == {"before-masking": 0, "after-masking": 0}
    registered = {str(node) for node in deployment.node_ids.values()}
    assert set(record["nodes"]["train"]) == registered
    assert {o["status"] for o in record["nodes"]["train"].values()} == {"ok"}
    assert (deployment.result.run_dir / "model.keras").is_file()

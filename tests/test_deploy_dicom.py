"""`deploy local --data dicom`: hospitals holding DICOM files + labels.csv pass `site check`
and train, with real processes (SuperLink, 2 SuperNodes, `flwr run`) on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from cli.main import main
from deployment.deploy_cli import DeployOptions, deploy_local

SITES, ROUNDS = 2, 1


@pytest.mark.e2e
@pytest.mark.timeout(480)
def test_dicom_hospitals_pass_site_check_and_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    workdir = tmp_path / "work"
    options = DeployOptions(
        sites=SITES, rounds=ROUNDS, examples=30, workdir=workdir, timeout=360, data="dicom"
    )

    # Execute: deploy_local stops every process it started, also on failure
    with (tmp_path / "deploy.out").open("w") as out:
        deployment = deploy_local(options, Console(file=out, width=200))
    checks = [
        main(["site", "check", str(workdir / "sites" / f"site-{i}" / "data")]) for i in (1, 2)
    ]

    # Assert: each site's data is DICOM only, passes the check, and every hospital trained
    # and evaluated in every round, reporting the `dicom` data kind
    for i in (1, 2):
        data = workdir / "sites" / f"site-{i}" / "data"
        assert (data / "labels.csv").is_file()
        assert {p.suffix for p in data.rglob("*") if p.is_file()} == {".csv", ".dcm"}
    assert checks == [0, 0]
    metrics = json.loads((deployment.result.run_dir / "metrics.json").read_text("utf-8"))
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    registered = {str(node) for node in deployment.node_ids.values()}
    for record in rounds:
        for stage in ("train", "evaluate"):
            outcomes = record["nodes"][stage]
            assert set(outcomes) == registered
            assert {(o["status"], o["data-kind"]) for o in outcomes.values()} == {("ok", "dicom")}
    assert [s.name for s in deployment.processes if s.popen.poll() is None] == []

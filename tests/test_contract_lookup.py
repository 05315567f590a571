"""Where ``site check`` finds the data contract: --manifest, the federation's installed app,
the manifest installed with fedclinic, the source checkout, in that order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli.main import main
from client.contract_lookup import find_manifest
from common.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = '[tool.flwr.app.config]\nclass-names = "a,b"\nimage-size = {size}\n'


def _manifest(path: Path, size: int = 28, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MANIFEST.format(size=size), encoding="utf-8")
    if mtime is not None:
        os.utime(path.parent, (mtime, mtime))
    return path


def _places(root: Path) -> dict[str, Path]:
    """Every place the lookup reads, under ``root``."""
    return {
        "--manifest": root / "given" / "pyproject.toml",
        "app": root / "flwr" / "apps" / "fedclinic.fedclinic.0.2.0.0123abcd" / "pyproject.toml",
        "packaged": root / "site-packages" / "common" / "app_manifest.toml",
        "checkout": root / "site-packages" / "pyproject.toml",
    }


@pytest.mark.parametrize(
    ("present", "expected", "origin"),
    [
        (["--manifest", "app", "packaged", "checkout"], "--manifest", "--manifest"),
        (["app", "packaged", "checkout"], "app", "the federation's app, installed by a SuperNode"),
        (["packaged", "checkout"], "packaged", "installed with fedclinic"),
        (["checkout"], "checkout", "the source checkout"),
    ],
    ids=["explicit", "installed-app", "packaged", "checkout"],
)
def test_lookup_takes_the_first_place_that_exists(
    tmp_path: Path, present: list[str], expected: str, origin: str
) -> None:
    # Prepare
    places = _places(tmp_path)
    for name in present:
        _manifest(places[name])
    explicit = places["--manifest"] if "--manifest" in present else None

    # Execute
    contract = find_manifest(
        explicit, tmp_path / "flwr", places["packaged"].parent, places["checkout"].parent
    )

    # Assert
    assert (contract.path, contract.origin) == (places[expected], origin)


def test_the_most_recently_installed_fedclinic_app_wins(tmp_path: Path) -> None:
    # Prepare
    apps = tmp_path / "apps"
    old = _manifest(apps / "fedclinic.fedclinic.0.1.0.aaaaaaaa" / "pyproject.toml", mtime=1e9)
    new = _manifest(apps / "fedclinic.fedclinic.0.1.1.bbbbbbbb" / "pyproject.toml", mtime=2e9)
    _manifest(apps / "flwrlabs.other-app.9.9.9.cccccccc" / "pyproject.toml", mtime=3e9)

    # Execute
    contract = find_manifest(None, tmp_path, tmp_path / "none", tmp_path / "none")

    # Assert
    assert contract.path == new != old


def test_nothing_found_is_one_line_naming_every_place(tmp_path: Path) -> None:
    places = _places(tmp_path)

    with pytest.raises(ConfigError) as raised:
        find_manifest(None, tmp_path / "flwr", places["packaged"].parent, tmp_path / "src")

    assert str(raised.value) == (
        f"No app manifest found; looked in {tmp_path}/flwr/apps/*.fedclinic.*/pyproject.toml, "
        f"{places['packaged']}, {tmp_path}/src/pyproject.toml. "
        "Pass --manifest PATH (the federation's pyproject.toml)."
    )


def test_a_missing_manifest_option_names_the_absolute_path_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a relative path, and an app that must not be used instead
    monkeypatch.chdir(tmp_path)
    _manifest(tmp_path / "flwr" / "apps" / "fedclinic.fedclinic.0.1.0.aaaaaaaa" / "pyproject.toml")

    # Execute
    with pytest.raises(ConfigError) as raised:
        find_manifest(Path("conf/pyproject.toml"), tmp_path / "flwr")

    # Assert
    assert str(raised.value) == (
        "Invalid value for `--manifest`. Expected the app's pyproject.toml. "
        f"Received: '{tmp_path / 'conf' / 'pyproject.toml'}'"
    )


def test_site_check_uses_the_installed_app_of_flwr_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the federation's app declares 64-pixel images
    app = tmp_path / "flwr" / "apps" / "fedclinic.fedclinic.0.1.0.aaaaaaaa" / "pyproject.toml"
    app.parent.mkdir(parents=True)
    ours = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    app.write_text(ours.replace("\nimage-size = 28", "\nimage-size = 64"), encoding="utf-8")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))

    # Execute
    code = main(["site", "check", str(tmp_path / "no-data")])

    # Assert
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[:3] == [
        f"Contract: {app} (the federation's app, installed by a SuperNode)",
        f"Site no-data: {tmp_path / 'no-data'}",
        "Expected: classes normal, pneumonia; 64x64x1; at least 10 train and held-out images",
    ]

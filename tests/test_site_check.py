"""``fedclinic site check``: the ClientApp's own validation, run by a hospital, offline."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from client.site_check import check_site
from common.data.folder import write_image_folder
from common.data.synthetic import synthetic_site
from tests.factories import app_config

CONFIG = app_config()
SPEC = CONFIG.data.spec()


@pytest.fixture(autouse=True)
def _no_installed_app(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contract comes from this checkout, not from an app under the real ~/.flwr."""
    monkeypatch.setenv("FLWR_HOME", str(tmp_path_factory.mktemp("flwr-home")))


def _good_folder(root: Path, with_test: bool = True, examples: int = 40) -> Path:
    """A valid image folder: ``train/`` and (optionally) ``test/`` of the declared classes."""
    site = synthetic_site(7, 0, examples, SPEC)
    splits = {"train": site.train, "test": site.test} if with_test else {"train": site.train}
    write_image_folder(root, splits, SPEC.class_names)
    return root


def _unreadable_file(root: Path) -> str:
    bad = root / "train" / "normal" / "broken.png"
    bad.write_bytes(b"not a png")
    return f"`{bad}`: unreadable image (UnidentifiedImageError: cannot identify image file '{bad}')"


def _unknown_class(root: Path) -> str:
    folder = root / "train" / "covid"
    folder.mkdir()
    shutil.copy(next((root / "train" / "normal").glob("*.png")), folder / "x.png")
    return f"`{folder}`: unknown class folder `covid`; declared classes: normal, pneumonia"


def _empty_split(root: Path) -> str:
    for image in (root / "test").rglob("*.png"):
        image.unlink()
    return f"`{root / 'test'}`: no images (.png, .jpg, .jpeg)"


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["site", "check", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_good_folder_passes_with_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    root = _good_folder(tmp_path / "st-marys")

    # Execute
    code, out, err = _check(root, capsys)

    # Assert
    assert code == 0
    assert err == ""
    assert f"Site st-marys: {root}" in out
    assert "28x28x1" in out
    assert "OK: the federation will accept this data." in out


def test_report_counts_images_per_class_and_split(tmp_path: Path) -> None:
    # Prepare
    site = synthetic_site(7, 0, 40, SPEC)
    root = _good_folder(tmp_path / "site")

    # Execute
    report = check_site(root, SPEC, "site", CONFIG.data.holdout_fraction, CONFIG.seed)

    # Assert
    assert report.ok
    assert [(s.name, s.examples) for s in report.splits] == [
        ("test", len(site.test)),
        ("train", len(site.train)),
    ]
    train = report.splits[1]
    assert list(train.per_class.values()) == site.class_counts(site.train)
    assert train.shape == (28, 28, 1)
    low, high = train.value_range or (-1.0, -1.0)
    assert 0.0 <= low < high <= 1.0


def test_folder_without_test_split_reports_the_held_out_part(tmp_path: Path) -> None:
    root = _good_folder(tmp_path / "site", with_test=False, examples=120)

    report = check_site(root, SPEC, "site", CONFIG.data.holdout_fraction, CONFIG.seed)

    assert report.ok
    assert [s.name for s in report.splits] == ["train", "test (held out)"]


@pytest.mark.parametrize(
    ("with_test", "expected"),
    [
        (True, ["train", "val (held out)", "test"]),
        (False, ["train", "val (held out)", "test (held out)"]),
    ],
)
def test_val_fraction_reports_the_validation_part_the_client_app_holds_out(
    tmp_path: Path, with_test: bool, expected: list[str]
) -> None:
    # Prepare
    root = _good_folder(tmp_path / "site", with_test=with_test, examples=120)

    # Execute
    report = check_site(root, SPEC, "site", 0.2, CONFIG.seed, val_fraction=0.1)

    # Assert
    assert report.ok
    assert [s.name for s in report.splits] == expected
    train, val = report.splits[0], report.splits[1]
    assert val.examples == round(0.1 * (train.examples + val.examples))


@pytest.mark.parametrize(
    "breaks",
    [_unreadable_file, _unknown_class, _empty_split],
    ids=["unreadable-file", "unknown-class-folder", "empty-split"],
)
def test_broken_folder_fails_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], breaks: Callable[[Path], str]
) -> None:
    # Prepare
    root = _good_folder(tmp_path / "site")
    problem = breaks(root)

    # Execute
    code, _, err = _check(root, capsys)

    # Assert
    assert code == 1
    assert err == f"1 problem(s) in {root}:\n- {problem}\n"


def test_every_problem_is_named_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    root = _good_folder(tmp_path / "site")
    problems = [_empty_split(root), _unknown_class(root), _unreadable_file(root)]

    # Execute
    code, _, err = _check(root, capsys)

    # Assert
    assert code == 1
    assert err.splitlines() == [f"3 problem(s) in {root}:", *(f"- {p}" for p in problems)]


def test_wrong_image_shape_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    path = tmp_path / "site.npz"
    np.savez(
        path,
        train_images=np.zeros((20, 32, 32), np.uint8),
        train_labels=np.zeros(20, np.int64),
    )

    # Execute
    code, _, err = _check(path, capsys)

    # Assert
    assert code == 1
    assert err == (
        f"1 problem(s) in {path}:\n- `{path}:train` images: expected 28x28 pixels, received 32x32\n"
    )


def test_too_few_images_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    root = _good_folder(tmp_path / "site")

    # Execute
    code = main(["site", "check", str(root), "--min-examples", "1000"])

    # Assert
    assert code == 1
    assert "`train` split: expected at least 1000 examples, received " in capsys.readouterr().err


def test_missing_path_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nowhere"

    code, _, err = _check(path, capsys)

    assert code == 1
    assert err == (
        f"1 problem(s) in {path}:\n- expected a MedMNIST .npz file or an image folder; not found\n"
    )


def test_bad_contract_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["site", "check", "x", "--image-size", "4"])

    assert code == 1
    assert capsys.readouterr().err == (
        "error: Invalid value for `image-size`. Expected an integer ≥ 8 and ≤ 1024. Received: 4\n"
    )


def test_missing_manifest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "pyproject.toml"

    code = main(["site", "check", str(tmp_path), "--manifest", str(manifest)])

    assert code == 1
    assert capsys.readouterr().err == (
        "error: Invalid value for `--manifest`. Expected the app's pyproject.toml. "
        f"Received: '{manifest}'\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[project]\nname = "other-app"\n',
            "Missing section [tool.flwr.app.config] in {manifest}. Expected the app manifest "
            "(fedclinic's pyproject.toml) that declares every run setting.",
        ),
        (
            '[tool.flwr.app]\nconfig = "not a table"\n',
            "Missing section [tool.flwr.app.config] in {manifest}. Expected the app manifest "
            "(fedclinic's pyproject.toml) that declares every run setting.",
        ),
        (
            "[tool.flwr.app.config\n",
            "Invalid TOML in {manifest}: Expected ']' at the end of a table declaration "
            "(at line 1, column 22)",
        ),
    ],
    ids=["no-app-section", "config-not-a-table", "not-toml"],
)
def test_manifest_that_is_not_an_app_manifest_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    # Prepare
    manifest = tmp_path / "pyproject.toml"
    manifest.write_text(text, encoding="utf-8")

    # Execute
    code = main(["site", "check", str(tmp_path), "--manifest", str(manifest)])

    # Assert
    assert code == 1
    assert capsys.readouterr().err == f"error: {message.format(manifest=manifest)}\n"

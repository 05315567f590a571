"""``fedclinic site check`` names what will hurt training: an empty declared class, class
folders that are almost right, images the loader converts or resizes, ignored files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli.main import main

PER_CLASS = 12  # images per class and split: above min-examples (10) once split
VALUES = f"0..{254 / 255:.3g}"  # the pixels _image draws: 0..254


@pytest.fixture(autouse=True)
def _no_installed_app(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contract comes from this checkout, not from an app under the real ~/.flwr."""
    monkeypatch.setenv("FLWR_HOME", str(tmp_path_factory.mktemp("flwr-home")))


def _image(path: Path, mode: str = "L", size: tuple[int, int] = (28, 28)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(path.name)).integers(0, 255, (size[1], size[0]))
    if mode == "RGB":
        Image.fromarray(np.stack([pixels] * 3, axis=-1).astype(np.uint8), "RGB").save(path)
    elif mode == "I;16":
        Image.fromarray((pixels * 256).astype(np.uint16)).save(path)
    else:
        Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(path)
    return path


def _site(root: Path) -> Path:
    """A site that passes: train/ and test/, both classes, grey 28x28 PNGs."""
    for split in ("train", "test"):
        for name in ("normal", "pneumonia"):
            for i in range(PER_CLASS):
                _image(root / split / name / f"{i:02d}.png")
    return root


Case = Callable[[Path], tuple[list[str], list[str]]]  # breaks root -> (problems, notes)


def _no_pneumonia_folder(root: Path) -> tuple[list[str], list[str]]:
    for split in ("train", "test"):
        shutil.rmtree(root / split / "pneumonia")
    looked = f"`{root / 'test' / 'pneumonia'}`, `{root / 'train' / 'pneumonia'}`"
    return [f"declared class `pneumonia` has no images in any split; looked in {looked}"], []


def _capitalised_class(root: Path) -> tuple[list[str], list[str]]:
    for split in ("train", "test"):
        (root / split / "pneumonia").rename(root / split / "Pneumonia")
    unknown = (
        "unknown class folder `Pneumonia`; declared classes: normal, pneumonia (did you mean "
        "`pneumonia`? Class folder names are case-sensitive: rename it)"
    )
    looked = f"`{root / 'test' / 'pneumonia'}`, `{root / 'train' / 'pneumonia'}`"
    return [
        f"`{root / 'test' / 'Pneumonia'}`: {unknown}",
        f"`{root / 'train' / 'Pneumonia'}`: {unknown}",
        f"declared class `pneumonia` has no images in any split; looked in {looked}",
    ], []


def _misspelt_class(root: Path) -> tuple[list[str], list[str]]:
    (root / "train" / "pneumonia").rename(root / "train" / "pneumonie")
    return [
        f"`{root / 'train' / 'pneumonie'}`: unknown class folder `pneumonie`; declared "
        "classes: normal, pneumonia (did you mean `pneumonia`?)"
    ], []


def _capitalised_split(root: Path) -> tuple[list[str], list[str]]:
    shutil.rmtree(root / "test")
    (root / "train").rename(root / "Train")
    return [
        f"`{root / 'Train'}`: unknown class folder `Train`; declared classes: normal, "
        "pneumonia (did you mean the split folder `train`? Split names are lower case)",
        f"declared class `normal` has no images in any split; looked in `{root / 'normal'}`",
        f"declared class `pneumonia` has no images in any split; looked in `{root / 'pneumonia'}`",
    ], []


def _colour_and_odd_sizes(root: Path) -> tuple[list[str], list[str]]:
    normal = root / "train" / "normal"
    _image(normal / "rgb.png", "RGB")
    _image(normal / "wide.png", size=(64, 48))
    _image(normal / "big.png", size=(56, 56))
    total = PER_CLASS + 3
    return [], [
        f"`{normal}`: 1 of {total} images are RGB, not grey (L): converted to grey",
        f"`{normal}`: 2 of {total} images are not 28x28 (56x56: 1, 64x48: 1): resized to "
        "28x28 (bilinear; the aspect ratio is not kept)",
    ]


def _sixteen_bit_and_transparent(root: Path) -> tuple[list[str], list[str]]:
    test = root / "test" / "pneumonia"
    _image(test / "deep.png", "I;16")
    _image(test / "alpha.png", "RGBA")
    total = PER_CLASS + 2
    return [], [
        f"`{test}`: 1 of {total} images are I;16, not grey (L): scaled from 16 bits "
        "(0..65535) to 8-bit grey",
        f"`{test}`: 1 of {total} images are RGBA, not grey (L): converted to grey, "
        "transparency dropped",
    ]


def _ignored_files(root: Path) -> tuple[list[str], list[str]]:
    normal = root / "train" / "normal"
    for name in ("notes.txt", ".DS_Store", "scan.dcm", "scan.bmp"):
        (normal / name).write_text("x")
    _image(normal / "more" / "x.png")
    _image(root / "train" / "loose.png")
    (root / "README.txt").write_text("x")
    return [], [
        f"`{root}`: 1 entry ignored, only split folders are read here: README.txt",
        f"`{root / 'train'}`: 1 entry ignored, only class folders are read here: loose.png",
        f"`{normal}`: 5 entries ignored, not a visible .png/.jpg/.jpeg file: .DS_Store, "
        "more/, notes.txt, +2 more",
    ]


@pytest.mark.parametrize(
    "breaks",
    [
        _no_pneumonia_folder,
        _capitalised_class,
        _misspelt_class,
        _capitalised_split,
        _colour_and_odd_sizes,
        _sixteen_bit_and_transparent,
        _ignored_files,
    ],
    ids=lambda case: case.__name__.strip("_"),
)
def test_site_check_reports_what_will_hurt_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], breaks: Case
) -> None:
    # Prepare
    root = _site(tmp_path / "site")
    problems, notes = breaks(root)

    # Execute
    code = main(["site", "check", str(root)])
    out, err = capsys.readouterr()

    # Assert
    assert code == (1 if problems else 0)
    assert [line[2:] for line in out.splitlines() if line.startswith("- ")] == notes
    if problems:
        assert err.splitlines() == [f"{len(problems)} problem(s) in {root}:"] + [
            f"- {p}" for p in problems
        ]
    else:
        assert err == ""
        assert out.splitlines()[-1] == "OK: the federation will accept this data."


def _table(out: str) -> dict[str, list[str]]:
    """The per-class table's rows: split -> the other cells."""
    rows = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


@pytest.mark.parametrize(
    ("breaks", "expected"),
    [
        (  # the loader refuses the site: image files are counted
            _capitalised_class,
            {
                "test": [str(PER_CLASS), "0", str(PER_CLASS), "-", "-"],
                "train": [str(PER_CLASS), "0", str(PER_CLASS), "-", "-"],
            },
        ),
        (  # the loader reads the site, the check refuses it
            _no_pneumonia_folder,
            {
                "train": ["11", "0", "11", "28x28x1", VALUES],
                "val (held out)": ["1", "0", "1", "28x28x1", VALUES],
                "test": [str(PER_CLASS), "0", str(PER_CLASS), "28x28x1", VALUES],
            },
        ),
    ],
    ids=["loader-refuses", "check-refuses"],
)
def test_the_per_class_table_is_printed_with_problems(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    breaks: Case,
    expected: dict[str, list[str]],
) -> None:
    # Prepare
    root = _site(tmp_path / "site")
    breaks(root)

    # Execute
    code = main(["site", "check", str(root), "--val-fraction", "0.1"])
    out, _ = capsys.readouterr()

    # Assert
    assert code == 1
    assert _table(out) == expected


def test_a_dicom_site_without_a_declared_class_fails_naming_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: only `normal` images, as DICOM files with labels.csv
    from common.data.dicom_write import write_dicom_site
    from common.data.schema import Split

    images = np.random.default_rng(0).random((2 * PER_CLASS, 28, 28, 1)).astype(np.float32)
    normal = Split(images, np.zeros(2 * PER_CLASS, np.int64))
    root = tmp_path / "dicom-site"
    write_dicom_site(root, {"train": normal, "test": normal}, ("normal", "pneumonia"))

    # Execute
    code = main(["site", "check", str(root)])
    out, err = capsys.readouterr()

    # Assert
    assert code == 1
    assert _table(out)["test"][:3] == [str(2 * PER_CLASS), "0", str(2 * PER_CLASS)]
    assert err.splitlines() == [
        f"1 problem(s) in {root}:",
        f"- declared class `pneumonia` has no images in any split; looked in `{root}`",
    ]

"""`site check` notes on a DICOM site: what the loader resizes, converts, inverts or ignores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.data.dicom_survey import survey_dicom
from common.data.dicom_write import dicom_dataset, write_dicom
from common.data.schema import DataSpec


def _spec(channels: int = 1) -> DataSpec:
    return DataSpec(
        class_names=("normal", "pneumonia"), image_size=28, channels=channels, min_examples=1
    )


def _grey(root: Path, name: str, rows: int = 28, columns: int = 28, **attributes: object) -> None:
    write_dicom(root / name, dicom_dataset(np.zeros((rows, columns), np.uint8), **attributes))


def _rgb(root: Path, name: str) -> None:
    write_dicom(root / name, dicom_dataset(np.zeros((28, 28, 3), np.uint8)))


def test_a_site_that_matches_the_contract_has_no_notes(tmp_path: Path) -> None:
    # Prepare
    for i in range(3):
        _grey(tmp_path, f"a/{i}.dcm")
    (tmp_path / "labels.csv").write_text("path,label\n", "utf-8")
    (tmp_path / ".hidden").write_text("x", "utf-8")

    # Execute / Assert
    assert survey_dicom(tmp_path, _spec()) == []


def test_sizes_colour_inversion_and_ignored_files_are_each_noted(tmp_path: Path) -> None:
    # Prepare: 5 DICOM files: 2 fit, one 64 wide x 48 high, one 56x56 MONOCHROME1, one RGB
    _grey(tmp_path, "a/0.dcm")
    _grey(tmp_path, "a/1.dcm")
    _grey(tmp_path, "b/wide.dcm", rows=48, columns=64)
    _grey(tmp_path, "b/inv.dcm", rows=56, columns=56, PhotometricInterpretation="MONOCHROME1")
    _rgb(tmp_path, "c/colour.dcm")
    (tmp_path / "labels.csv").write_text("path,label\n", "utf-8")
    (tmp_path / "notes.txt").write_text("x", "utf-8")
    (tmp_path / "b" / "scan.png").write_bytes(b"not dicom")

    # Execute
    notes = survey_dicom(tmp_path, _spec())

    # Assert
    assert notes == [
        f"`{tmp_path}`: 2 of 5 DICOM images are not 28x28 (56x56: 1, 64x48: 1): resized to "
        "28x28 (bilinear; the aspect ratio is not kept)",
        f"`{tmp_path}`: 1 of 5 DICOM images are colour (RGB/YBR), not grey: converted to grey "
        "(luminance)",
        f"`{tmp_path}`: 1 of 5 DICOM images are MONOCHROME1 (bright = low values): inverted, "
        "as a viewer shows them",
        f"`{tmp_path}`: 2 files ignored, not DICOM (no .dcm/.dicom suffix or `DICM` marker): "
        "b/scan.png, notes.txt",
    ]


@pytest.mark.parametrize(("channels", "expected"), [(1, 0), (3, 1)])
def test_grey_images_in_a_colour_federation_are_noted(
    tmp_path: Path, channels: int, expected: int
) -> None:
    # Prepare
    _grey(tmp_path, "0.dcm")

    # Execute
    notes = survey_dicom(tmp_path, _spec(channels))

    # Assert
    assert len([n for n in notes if "copied to 3 channels" in n]) == expected

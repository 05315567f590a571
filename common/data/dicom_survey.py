"""What a DICOM site holds, read from headers only, the way :mod:`common.data.dicom` reads it.

``fedclinic site check`` notes from :func:`survey_dicom` what the loader will resize,
convert or invert, and which files under the folder it ignores. Notes never fail a check:
unreadable files and missing labels are the loader's problems, named by file.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from common.data.dicom import COLOUR, DICOM_SUFFIXES, dicom_files
from common.data.dicom_labels import LABELS_FILE
from common.data.folder_survey import resize_notes
from common.data.schema import DataSpec

_SHOWN = 3  # sizes / names listed before "+N more"


def survey_dicom(root: Path, spec: DataSpec) -> list[str]:
    """One note per kind of difference from the contract, then one for ignored files."""
    files = dicom_files(root)
    sizes: Counter[tuple[int, int]] = Counter()
    photometric: Counter[str] = Counter()
    for name in files:
        header = _header(root / name)
        if header is None:
            continue  # the loader names the unreadable file
        size, kind = header
        sizes[size] += 1
        photometric[kind] += 1
    read = sum(sizes.values())
    notes = [
        *resize_notes(root, sizes, read, spec.image_size, "DICOM images"),
        *_colour_notes(root, photometric, read, spec),
    ]
    ignored = _ignored(root, set(files))
    if ignored:
        shown = ", ".join(ignored[:_SHOWN])
        more = f", +{len(ignored) - _SHOWN} more" if len(ignored) > _SHOWN else ""
        entries = "file" if len(ignored) == 1 else "files"
        notes.append(
            f"`{root}`: {len(ignored)} {entries} ignored, not DICOM (no "
            f"{'/'.join(DICOM_SUFFIXES)} suffix or `DICM` marker): {shown}{more}"
        )
    return notes


def _header(file: Path) -> tuple[tuple[int, int], str] | None:
    """((width, height), photometric interpretation), or None when the header is unreadable."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        dataset = dcmread(file, stop_before_pixels=True)
        size = (int(dataset.Columns), int(dataset.Rows))
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError):
        return None
    return size, str(dataset.get("PhotometricInterpretation", ""))


def _colour_notes(root: Path, kinds: Counter[str], read: int, spec: DataSpec) -> list[str]:
    notes = []
    colour = sum(n for kind, n in kinds.items() if kind in COLOUR)
    if colour and spec.channels == 1:
        notes.append(
            f"`{root}`: {colour} of {read} DICOM images are colour (RGB/YBR), not grey: "
            "converted to grey (luminance)"
        )
    grey = read - colour
    if grey and spec.channels == 3:
        notes.append(
            f"`{root}`: {grey} of {read} DICOM images are grey, not colour: copied to 3 channels"
        )
    if kinds["MONOCHROME1"]:
        notes.append(
            f"`{root}`: {kinds['MONOCHROME1']} of {read} DICOM images are MONOCHROME1 "
            "(bright = low values): inverted, as a viewer shows them"
        )
    return notes


def _ignored(root: Path, dicom: set[str]) -> list[str]:
    """Visible files under ``root`` the loader skips: not DICOM and not ``labels.csv``."""
    skipped = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            relative = (Path(folder) / name).relative_to(root).as_posix()
            if name.startswith(".") or relative == LABELS_FILE or relative in dicom:
                continue
            skipped.append(relative)
    return sorted(skipped)

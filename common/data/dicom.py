"""DICOM sites: a folder of DICOM files plus ``labels.csv`` at its top.

``labels.csv`` (``common/data/dicom_labels.py``) gives each file's class and split. Each
file is read with pydicom (imported only here, when a DICOM site is loaded) the way a
viewer shows it: the Modality LUT (Rescale Slope / Intercept or a Modality LUT Sequence),
then the VOI LUT Sequence or else the first Window Center / Width (with the VOI LUT
Function), scaled to [0, 1] over that transform's output range; without either, the
rescaled values are min-max scaled. MONOCHROME1 is inverted so that bright is dense, as in
MONOCHROME2. Colour files (RGB, YBR: pydicom converts them to RGB) are scaled by their
Bits Stored. The image is then resized (bilinear, in floating point) to ``image-size``
and given ``channels`` channels (grey repeated, or colour to luminance). Every problem
names its file; all are reported together in one :class:`DataError`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from common.data.dicom_labels import LABELS_FILE, read_labels
from common.data.schema import SPLIT_NAMES, DataSpec, Split, make_split
from common.errors import DataError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
GREY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")
LUMINANCE = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as Pillow's "L" conversion
_MAGIC_OFFSET, _MAGIC = 128, b"DICM"
_PIXEL_ERRORS = (RuntimeError, ValueError, TypeError, AttributeError, KeyError, OSError)


class UnusableDicomError(Exception):
    """Why one DICOM file cannot be used (the loader adds the file's path)."""


def load_dicom_folder(root: Path, spec: DataSpec, site_name: str) -> dict[str, Split]:
    """Every split ``root/labels.csv`` names, its files read in sorted path order."""
    if not root.is_dir():
        raise DataError(site_name, [f"`{root}`: folder not found"])
    labels = read_labels(root, spec.class_names)
    problems = list(labels.problems)
    problems += [
        f"`{root / path}`: DICOM file without a label in `{LABELS_FILE}`"
        for path in sorted(set(dicom_files(root)) - labels.mentioned)
    ]
    raw: dict[str, tuple[list[np.ndarray], list[int]]] = defaultdict(lambda: ([], []))
    for row in sorted(labels.rows, key=lambda r: r.path):
        file = root / row.path
        if not file.is_file():
            problems.append(f"`{file}`: labelled in `{LABELS_FILE}` line {row.line}, not found")
            continue
        try:
            image = read_dicom_image(file, spec)
        except UnusableDicomError as error:
            problems.append(f"`{file}`: {error}")
            continue
        raw[row.split][0].append(image)
        raw[row.split][1].append(row.label)
    if problems:
        raise DataError(site_name, problems)
    return {
        name: make_split(
            np.stack(raw[name][0]), np.asarray(raw[name][1], np.int64), spec, f"{root} ({name})"
        )
        for name in SPLIT_NAMES
        if name in raw
    }


def dicom_files(root: Path) -> list[str]:
    """Paths (relative, ``/``-separated) of the DICOM files under ``root``: visible files
    with a ``.dcm`` / ``.dicom`` suffix or the ``DICM`` marker; hidden folders skipped."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") or (path.parent == root and name == LABELS_FILE):
                continue
            if path.suffix.lower() in DICOM_SUFFIXES or _has_marker(path):
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def read_dicom_image(file: Path, spec: DataSpec) -> np.ndarray:
    """One file as float32 (image-size, image-size, channels) in [0, 1]."""
    dataset = _open(file)
    pixels = _pixels(dataset)
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    try:
        if photometric in GREY:
            grey = _grey_to_unit(pixels, dataset)
            return _shape(grey[..., np.newaxis], spec)
    except _PIXEL_ERRORS as error:
        raise UnusableDicomError(
            f"cannot apply its LUTs ({type(error).__name__}: {error})"
        ) from error
    full_scale = 2.0 ** int(dataset.get("BitsStored", 8)) - 1.0
    return _shape(np.clip(pixels.astype(np.float64) / full_scale, 0.0, 1.0), spec)


def _open(file: Path) -> Dataset:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        return dcmread(file)
    except InvalidDicomError as error:
        raise UnusableDicomError("not a DICOM file (no `DICM` marker at byte 128)") from error
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as error:
        raise UnusableDicomError(
            f"unreadable DICOM file ({type(error).__name__}: {error})"
        ) from error


def _pixels(dataset: Dataset) -> np.ndarray:
    """The stored pixel values of a single-frame grey or colour image."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import ImplicitVRLittleEndian

    if "PixelData" not in dataset:
        raise UnusableDicomError("no pixel data")
    frames = _int(dataset.get("NumberOfFrames", 1))
    if frames > 1:
        raise UnusableDicomError(f"multi-frame ({frames} frames); expected one image per file")
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric not in (*GREY, *COLOUR):
        expected = ", ".join((*GREY, *COLOUR))
        raise UnusableDicomError(f"photometric interpretation `{photometric}`; expected {expected}")
    meta = getattr(dataset, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) or ImplicitVRLittleEndian
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as error:
        raise UnusableDicomError(f"unsupported transfer syntax {syntax.name} ({syntax})") from error
    if not decoder.is_available:
        plugins = ", ".join(d.split(" - ")[0] for d in decoder.missing_dependencies)
        raise UnusableDicomError(
            f"compressed transfer syntax {syntax.name} and no decoder installed "
            f"(install one of: {plugins})"
        )
    try:
        pixels: np.ndarray = dataset.pixel_array
    except _PIXEL_ERRORS as error:
        raise UnusableDicomError(
            f"unreadable pixel data ({type(error).__name__}: {error})"
        ) from error
    expected_ndim = 2 if photometric in GREY else 3
    if pixels.ndim != expected_ndim:
        raise UnusableDicomError(
            f"pixel data of shape {pixels.shape}; expected one {photometric} image"
        )
    return pixels


def _grey_to_unit(pixels: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Modality LUT, VOI LUT or window (else min-max), inversion of MONOCHROME1: [0, 1]."""
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    if dataset.get("VOILUTSequence"):  # a LUT is indexed by whole modality values
        whole = np.rint(values).astype(np.int64)
        values = np.asarray(apply_voi(whole, dataset), dtype=np.float64)
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        low, high = 0.0, 2.0**bits - 1.0
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        values = np.asarray(apply_windowing(values, dataset), dtype=np.float64)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            low, high = apply_windowing(np.array([-np.inf, np.inf]), dataset).tolist()
    else:
        low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high != low else np.zeros_like(values)
    scaled = np.clip(scaled, 0.0, 1.0)
    return 1.0 - scaled if dataset.PhotometricInterpretation == "MONOCHROME1" else scaled


def _shape(image: np.ndarray, spec: DataSpec) -> np.ndarray:
    """(H, W, 1 or 3) in [0, 1] -> float32 (image-size, image-size, channels)."""
    if spec.channels == 1 and image.shape[-1] == 3:
        image = (image @ LUMINANCE)[..., np.newaxis]
    size = (spec.image_size, spec.image_size)
    planes = []
    for plane in np.moveaxis(image.astype(np.float32), -1, 0):
        picture = Image.fromarray(np.ascontiguousarray(plane))
        if picture.size != size:
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        planes.append(np.asarray(picture, dtype=np.float32))
    resized = np.clip(np.stack(planes, axis=-1), 0.0, 1.0)
    if spec.channels == 3 and resized.shape[-1] == 1:
        resized = np.repeat(resized, 3, axis=-1)
    return resized


def _has_marker(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(_MAGIC_OFFSET)
            return handle.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1

"""Write images as a DICOM site (``labels.csv`` + one DICOM file per image).

Used by ``fedclinic deploy local --data dicom`` for its synthetic hospitals and by the
tests to build DICOM files. Grey images are stored as CT-like 12-bit MONOCHROME2 values
with a rescale intercept and a window spanning the whole stored range, so that
:func:`common.data.dicom.load_dicom_folder` reads back each pixel to within 1/8190;
colour images as 8-bit RGB. ``labels.csv`` is written last and atomically: a folder
without it is not a DICOM site.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.data.dicom_labels import LABELS_FILE
from common.data.schema import Split
from common.errors import DataError
from common.files import atomic_path

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

STORED_BITS = 12
FULL_SCALE = 2**STORED_BITS - 1  # 4095
INTERCEPT = -1024.0  # rescaled values span INTERCEPT .. INTERCEPT + FULL_SCALE
# A LINEAR window mapping exactly INTERCEPT -> 0 and INTERCEPT + FULL_SCALE -> 1:
# (x - (center - 0.5)) / (width - 1) + 0.5 (DICOM PS3.3 C.11.2.1.2.1).
WINDOW_WIDTH = FULL_SCALE + 1.0
WINDOW_CENTER = INTERCEPT + 0.5 + (WINDOW_WIDTH - 1.0) / 2.0


def dicom_dataset(pixels: np.ndarray, **attributes: Any) -> Dataset:
    """A single-frame Secondary Capture dataset holding ``pixels`` uncompressed (explicit
    VR little endian): (H, W) unsigned grey MONOCHROME2, or (H, W, 3) RGB, its bit depth
    that of the array's dtype (``BitsStored`` may be overridden). ``attributes`` set or
    replace data elements by keyword (``RescaleSlope=2``, ``WindowCenter=40``, ...)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "OT"
    dataset.Rows, dataset.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    colour = pixels.ndim == 3
    dataset.SamplesPerPixel = 3 if colour else 1
    dataset.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        dataset.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    dataset.BitsAllocated = dataset.BitsStored = bits
    dataset.HighBit = bits - 1
    dataset.PixelRepresentation = 1 if np.issubdtype(pixels.dtype, np.signedinteger) else 0
    dataset.PixelData = (
        np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    )
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    if "BitsStored" in attributes:
        dataset.HighBit = int(attributes["BitsStored"]) - 1
    return dataset


def write_dicom(path: Path, dataset: Dataset) -> None:
    """Save ``dataset`` as a DICOM file (preamble, ``DICM``, file meta) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


def image_dataset(image: np.ndarray) -> Dataset:
    """One image of a split (H, W, 1 or 3) in [0, 1] as a dataset the loader reads back."""
    if image.ndim == 3 and image.shape[-1] == 3:
        return dicom_dataset(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8))
    stored = np.clip(np.rint(image[..., 0] * FULL_SCALE), 0, FULL_SCALE).astype(np.uint16)
    return dicom_dataset(
        stored,
        BitsStored=STORED_BITS,
        RescaleSlope=1.0,
        RescaleIntercept=INTERCEPT,
        RescaleType="US",
        WindowCenter=WINDOW_CENTER,
        WindowWidth=WINDOW_WIDTH,
    )


def write_dicom_site(root: Path, splits: dict[str, Split], class_names: tuple[str, ...]) -> None:
    """``root/<split>/<i>.dcm`` for every image and ``root/labels.csv`` naming each one's
    class and split: the inverse of :func:`common.data.dicom.load_dicom_folder`."""
    rows: list[tuple[str, str, str]] = []
    for split_name, split in splits.items():
        where = f"{root / split_name}"
        if split.images.ndim != 4 or split.images.shape[-1] not in (1, 3):
            raise DataError(
                where, [f"images: expected shape (N, H, W, 1 or 3), received {split.images.shape}"]
            )
        if len(split) and (split.labels.min() < 0 or split.labels.max() >= len(class_names)):
            raise DataError(where, [f"labels: expected values in 0..{len(class_names) - 1}"])
        width = len(str(max(len(split) - 1, 0)))
        for i, (image, label) in enumerate(zip(split.images, split.labels, strict=True)):
            relative = f"{split_name}/{i:0{width}d}.dcm"
            write_dicom(root / relative, image_dataset(image))
            rows.append((relative, class_names[int(label)], split_name))
    write_labels(root, rows)


def write_labels(
    root: Path, rows: Sequence[Sequence[str]], header: str = "path,label,split"
) -> None:
    """``root/labels.csv``: ``header`` then ``rows``, written atomically."""
    text = io.StringIO()
    text.write(header + "\n")
    csv.writer(text, lineterminator="\n").writerows(rows)
    with atomic_path(root / LABELS_FILE) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")

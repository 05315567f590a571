"""Turn a hospital's data location into validated :class:`SiteData`.

The same code serves the ClientApp and ``fedclinic site check``, so a site that passes
the check is a site the federation accepts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data.dicom import load_dicom_folder
from common.data.dicom_labels import LABELS_FILE
from common.data.folder import load_image_folder
from common.data.medmnist import load_medmnist
from common.data.schema import DataSpec, SiteData, Split, check_min_examples
from common.errors import DataError


def data_kind(path: Path) -> str | None:
    """How ``path`` is read: ``dicom`` (a folder with ``labels.csv`` at its top), ``folder``
    (an image folder), ``medmnist`` (an ``.npz``), or None."""
    if path.is_dir():
        return "dicom" if (path / LABELS_FILE).is_file() else "folder"
    if path.suffix == ".npz" or path.is_file():
        return "medmnist"
    return None


def load_splits(path: Path, spec: DataSpec, site_name: str) -> dict[str, Split]:
    """Read every split found at ``path``: a MedMNIST ``.npz`` file, an image folder or a
    DICOM folder."""
    kind = data_kind(path)
    if kind == "dicom":
        return load_dicom_folder(path, spec, site_name)
    if kind == "folder":
        return load_image_folder(path, spec, site_name)
    if kind == "medmnist":
        return load_medmnist(path, spec, site_name)
    raise DataError(str(path), ["expected a MedMNIST .npz file or an image folder; not found"])


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask choosing ``fraction`` of each class (at least one where a class has 2+)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(labels.shape[0], dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = round(fraction * members.size)
        if members.size > 1:
            count = min(max(count, 1), members.size - 1)
        mask[rng.choice(members, size=count, replace=False)] = True
    return mask


def validation_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The validation mask of a training split: :func:`stratified_holdout` drawn with its own
    seed stream, at least one image whenever the split has two or more (so that a small
    hospital still validates), never all of them."""
    mask = stratified_holdout(labels, fraction, seed + 1)
    if labels.shape[0] >= 2 and not mask.any():
        rng = np.random.default_rng(seed + 1)
        mask[int(rng.integers(labels.shape[0]))] = True
    return mask


def split_off_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """(what remains for training, the validation split); None when nothing can be held out."""
    held = validation_holdout(train.labels, fraction, seed)
    if not held.any():
        return train, None
    return train.take(np.flatnonzero(~held)), train.take(np.flatnonzero(held))


def site_from_splits(
    name: str,
    splits: dict[str, Split],
    spec: DataSpec,
    holdout_fraction: float,
    seed: int,
    val_fraction: float = 0.0,
) -> SiteData:
    """Assemble a site; without a ``test`` split, hold out part of ``train`` for it; without
    a ``val`` split, hold out ``val_fraction`` of the rest of ``train`` for validation
    (:func:`validation_holdout`; 0: no validation split)."""
    if "train" not in splits:
        raise DataError(name, ["no `train` split found"])
    train, test, val = splits["train"], splits.get("test"), splits.get("val")
    if test is None:
        held = stratified_holdout(train.labels, holdout_fraction, seed)
        train, test = train.take(np.flatnonzero(~held)), train.take(np.flatnonzero(held))
    if val is None and val_fraction > 0.0:
        train, val = split_off_validation(train, val_fraction, seed)
    site = SiteData(name=name, class_names=spec.class_names, train=train, test=test, val=val)
    check_min_examples(site, spec)
    return site


def load_site(
    path: Path,
    spec: DataSpec,
    site_name: str,
    holdout_fraction: float,
    seed: int,
    val_fraction: float = 0.0,
) -> SiteData:
    return site_from_splits(
        site_name, load_splits(path, spec, site_name), spec, holdout_fraction, seed, val_fraction
    )

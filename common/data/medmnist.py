"""Load a MedMNIST-style ``.npz`` archive (``train_images``, ``train_labels``, ...)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from common.data.schema import SPLIT_NAMES, DataSpec, Split, make_split
from common.errors import DataError

# np.load raises these for a file that is not a readable .npz archive.
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def load_medmnist(path: Path, spec: DataSpec, site_name: str) -> dict[str, Split]:
    """Read and validate every split present in ``path``.

    ``train_images`` and ``train_labels`` are required; ``val_*`` and ``test_*`` are
    returned when present. Every problem in the file is reported in one
    :class:`DataError` naming the file and the key; ``site_name`` is its source.
    """
    if not path.is_file():
        raise DataError(site_name, [f"`{path}`: file not found"])
    try:
        archive = np.load(path, allow_pickle=False)
    except _UNREADABLE as error:
        raise DataError(site_name, [f"`{path}`: not a readable .npz archive"]) from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(site_name, [f"`{path}`: expected an .npz archive, received a .npy array"])
    with archive:
        raw, problems = _read_arrays(archive, path)
    splits: dict[str, Split] = {}
    for name, (images, labels) in raw.items():
        try:
            splits[name] = make_split(images, labels, spec, where=f"{path}:{name}")
        except DataError as error:
            problems.extend(error.problems)
    if problems:
        raise DataError(site_name, problems)
    return splits


def _read_arrays(
    archive: np.lib.npyio.NpzFile, path: Path
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """The (images, labels) pair of every split found, and every problem reading them."""
    keys = set(archive.files)
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    problems: list[str] = []
    for name in SPLIT_NAMES:
        image_key, label_key = f"{name}_images", f"{name}_labels"
        present = [key for key in (image_key, label_key) if key in keys]
        if not present and name != "train":
            continue
        missing = [key for key in (image_key, label_key) if key not in keys]
        problems.extend(
            f"`{path}`: missing key `{key}` (keys found: {', '.join(sorted(keys)) or 'none'})"
            for key in missing
        )
        if missing:
            continue
        arrays = []
        for key in (image_key, label_key):
            try:
                arrays.append(np.asarray(archive[key]))
            except _UNREADABLE as error:
                problems.append(f"`{path}:{key}`: unreadable array ({error})")
        if len(arrays) == 2:
            raw[name] = (arrays[0], arrays[1])
    return raw, problems

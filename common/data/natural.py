"""The ``natural`` partitioner's data: one simulated hospital per real site.

Two layouts, sites taken in sorted order (hospital ``i`` gets the ``i``-th site):

- an image folder with one top-level folder per site, each laid out like any image
  folder (``root/<site>/<class>/*.png`` or ``root/<site>/{train,val,test}/<class>/*.png``)
  or any DICOM folder (``root/<site>/labels.csv`` and its DICOM files);
- a MedMNIST-style ``.npz`` with a ``<split>_site`` array (site names or integer ids, one
  per image, aligned with ``<split>_images``) beside every split it holds.

A site's splits are its own; a site with no ``val`` or ``test`` images has those held out
of its ``train`` split like any site's (``val-fraction``, ``holdout-fraction``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data.medmnist import load_medmnist
from common.data.partition import site_indices
from common.data.schema import SPLIT_NAMES, DataSpec, Split
from common.data.site import data_kind, load_splits
from common.errors import ConfigError, DataError, invalid_value


def site_splits(
    path: Path, spec: DataSpec, partition_id: int, num_partitions: int
) -> tuple[str, dict[str, Split]]:
    """(site name, its splits) of simulated hospital ``partition_id``."""
    kind = data_kind(path)
    if kind == "folder":
        return _folder_site(path, spec, partition_id, num_partitions)
    if kind == "dicom":
        expected = "one folder per site (this is a single DICOM site: `labels.csv` at its top)"
        raise DataError(str(path), [f"`{path}`: expected {expected}"])
    if kind == "medmnist":
        return _npz_site(path, spec, partition_id, num_partitions)
    raise DataError(str(path), ["expected a .npz file or a folder of site folders; not found"])


def _folder_site(
    root: Path, spec: DataSpec, partition_id: int, num_partitions: int
) -> tuple[str, dict[str, Split]]:
    sites = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not sites:
        raise DataError(str(root), [f"`{root}`: expected one folder per site, found none"])
    if num_partitions != len(sites):
        expected = (
            f"{len(sites)} simulated hospitals, one per site in `{root}` ({', '.join(sites)})"
        )
        raise ConfigError(invalid_value("hospitals", expected, num_partitions))
    site = sites[partition_id]
    return site, load_splits(root / site, spec, site)


def _npz_site(
    path: Path, spec: DataSpec, partition_id: int, num_partitions: int
) -> tuple[str, dict[str, Split]]:
    splits = load_medmnist(path, spec, str(path))
    ids = _site_arrays(path, splits)
    names = list(splits)
    everything = np.concatenate([ids[name] for name in names])
    parts = site_indices(everything, num_partitions, f"`{path}`")
    mine = parts[partition_id]
    site = str(everything[mine[0]])
    offsets = np.cumsum([0] + [len(splits[name]) for name in names])
    own: dict[str, Split] = {}
    for name, start, end in zip(names, offsets[:-1], offsets[1:], strict=True):
        chosen = mine[(mine >= start) & (mine < end)] - start
        if chosen.size:
            own[name] = splits[name].take(chosen)
    return site, own


def _site_arrays(path: Path, splits: dict[str, Split]) -> dict[str, np.ndarray]:
    """Each split's site ids; every problem with them in one :class:`DataError`."""
    problems: list[str] = []
    ids: dict[str, np.ndarray] = {}
    with np.load(path, allow_pickle=False) as archive:
        for name in (n for n in SPLIT_NAMES if n in splits):
            key = f"{name}_site"
            if key not in archive.files:
                problems.append(
                    f"`{path}`: missing key `{key}` (the `natural` partitioner needs the site "
                    f"of every image of every split)"
                )
                continue
            values = np.asarray(archive[key])
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            kind_ok = np.issubdtype(values.dtype, np.integer) or np.issubdtype(
                values.dtype, np.str_
            )
            if values.ndim != 1 or not kind_ok:
                problems.append(
                    f"`{path}:{key}`: expected site names or integer ids shaped (N,), "
                    f"received {values.dtype} {values.shape}"
                )
            elif values.shape[0] != len(splits[name]):
                problems.append(
                    f"`{path}:{key}`: {values.shape[0]} sites but {len(splits[name])} images"
                )
            else:
                ids[name] = values
    kinds = {np.issubdtype(v.dtype, np.str_) for v in ids.values()}
    if len(kinds) > 1:
        problems.append(f"`{path}`: site arrays mix names and integer ids")
    if problems:
        raise DataError(str(path), problems)
    return ids

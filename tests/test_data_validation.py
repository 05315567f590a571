"""Every hospital's validation split: given (MedMNIST ``val_*``, a folder's ``val/``),
held out of ``train`` (stratified, deterministic, disjoint), generated (synthetic), or
divided IID among simulated hospitals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.data.folder import write_image_folder
from common.data.schema import DataSpec, SiteData, Split
from common.data.site import load_site, site_from_splits, validation_holdout
from common.data.synthetic import synthetic_site
from simulations.hospitals import split_for_hospital
from tests.factories import app_config

CLASSES = ("normal", "pneumonia")
SPEC = DataSpec(CLASSES, image_size=8, channels=1, min_examples=1)


def tagged(labels: list[int], start: int = 0) -> Split:
    """Images whose every pixel is their own index / 1000 (so each image is identifiable)."""
    n = len(labels)
    values = (np.arange(start, start + n, dtype=np.float32) / 1000.0)[:, None, None, None]
    return Split(np.broadcast_to(values, (n, 8, 8, 1)).copy(), np.asarray(labels, np.int64))


def ids(split: Split | None) -> set[int]:
    assert split is not None
    return {round(float(v) * 1000) for v in split.images[:, 0, 0, 0]}


def test_medmnist_val_arrays_are_the_val_split(tmp_path: Path) -> None:
    train, val, test = tagged([0, 1] * 10), tagged([0, 1] * 3, 100), tagged([0, 1] * 2, 200)
    arrays = {}
    for name, split in (("train", train), ("val", val), ("test", test)):
        arrays[f"{name}_images"] = np.rint(split.images[..., 0] * 255).astype(np.uint8)
        arrays[f"{name}_labels"] = split.labels[:, None]
    path = tmp_path / "site.npz"
    np.savez(path, **arrays)

    site = load_site(path, SPEC, "site", 0.2, seed=1, val_fraction=0.5)

    assert site.val is not None
    np.testing.assert_array_equal(site.val.labels, val.labels)
    assert len(site.train) == 20  # nothing held out: the file has a val split
    np.testing.assert_array_equal(site.val.images, np.rint(val.images * 255) / 255)


def test_folder_val_directory_is_the_val_split(tmp_path: Path) -> None:
    splits = {"train": tagged([0, 1] * 6), "val": tagged([1, 1, 0], 100)}
    write_image_folder(tmp_path / "site", splits, CLASSES)

    site = load_site(tmp_path / "site", SPEC, "site", 0.25, seed=3, val_fraction=0.5)

    assert site.val is not None
    assert sorted(site.val.labels.tolist()) == [0, 1, 1]
    assert len(site.train) + len(site.test) == 12  # val came from val/, not from train


@pytest.mark.parametrize(
    ("labels", "fraction", "per_class"),
    [
        ([0] * 50 + [1] * 30, 0.1, {0: 5, 1: 3}),
        ([0] * 50 + [1] * 30, 0.2, {0: 10, 1: 6}),
        ([0] * 9 + [1] * 2, 0.1, {0: 1, 1: 1}),  # at least one of each class with 2+
        ([0, 1], 0.1, {0: 0, 1: 0}),  # singletons: no stratified pick ...
    ],
)
def test_holdout_is_stratified(
    labels: list[int], fraction: float, per_class: dict[int, int]
) -> None:
    mask = validation_holdout(np.asarray(labels), fraction, seed=5)

    held = np.asarray(labels)[mask]
    counts = {c: int(np.sum(held == c)) for c in per_class}
    if sum(per_class.values()) == 0:  # ... but a split of 2+ images always validates on one
        assert int(mask.sum()) == 1
    else:
        assert counts == per_class


def test_holdout_is_deterministic_disjoint_and_complete() -> None:
    train = tagged([0] * 40 + [1] * 20)
    first = site_from_splits("s", {"train": train}, SPEC, 0.2, seed=9, val_fraction=0.1)
    again = site_from_splits("s", {"train": train}, SPEC, 0.2, seed=9, val_fraction=0.1)
    other = site_from_splits("s", {"train": train}, SPEC, 0.2, seed=10, val_fraction=0.1)

    assert ids(first.val) == ids(again.val)
    assert ids(first.train) == ids(again.train)
    assert ids(first.val) != ids(other.val)
    parts = [ids(first.train), ids(first.val), ids(first.test)]
    assert sum(len(p) for p in parts) == 60
    assert set.union(*parts) == set(range(60))  # disjoint and nothing lost
    assert len(first.val or ()) == 5  # 10 % of the 48 left after the test hold-out, per class


def test_no_val_fraction_keeps_no_val_split() -> None:
    site = site_from_splits("s", {"train": tagged([0, 1] * 10)}, SPEC, 0.2, seed=1)

    assert site.val is None
    assert len(site.train) + len(site.test) == 20


def test_a_single_image_train_split_has_no_val() -> None:
    test = tagged([0, 1], 100)
    site = site_from_splits(
        "s", {"train": tagged([1]), "test": test}, SPEC, 0.2, seed=1, val_fraction=0.5
    )

    assert site.val is None
    assert len(site.train) == 1


def test_synthetic_hospitals_have_a_val_split_and_unchanged_train_and_test() -> None:
    spec = app_config().data.spec()

    site = synthetic_site(7, 2, 40, spec)

    assert site.val is not None
    assert len(site.val) == len(site.test)
    assert site.val.images.shape[1:] == spec.input_shape
    assert not np.array_equal(site.val.images, site.test.images)
    assert set(site.val.labels.tolist()) <= set(range(spec.num_classes))


def test_simulated_hospitals_divide_the_pooled_val_split_iid() -> None:
    config = app_config(partitioner="iid")
    pooled = SiteData(
        "pooled",
        CLASSES,
        train=tagged([0, 1] * 40),
        test=tagged([0, 1] * 20, 1000),
        val=tagged([0, 1] * 20, 2000),
    )

    sites = [split_for_hospital(pooled, config.data, 3, i, 4) for i in range(4)]

    vals = [ids(site.val) for site in sites]
    assert set.union(*vals) == ids(pooled.val)
    assert sum(len(v) for v in vals) == 40  # each image to exactly one hospital
    for site in sites:
        assert site.val is not None
        assert set(site.val.labels.tolist()) == {0, 1}

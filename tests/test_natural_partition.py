"""The `natural` partitioner: one simulated hospital per site, from an .npz or a folder tree.

Each image carries its own index in its first pixel, so a test sees which examples each
hospital received.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.data.folder import write_image_folder
from common.data.partition import site_indices
from common.data.schema import SiteData, Split
from common.errors import ConfigError, DataError
from simulations.hospitals import simulated_hospital
from tests.factories import app_config

CLASSES = ("normal", "pneumonia")


def tagged(n: int, scale: float) -> Split:
    """``n`` 28x28 images whose first pixel is ``index / scale``; labels alternate."""
    images = np.zeros((n, 28, 28, 1), np.float32)
    images[:, 0, 0, 0] = np.arange(n) / scale
    return Split(images, np.arange(n) % 2)


def tags(split: Split, scale: float) -> list[int]:
    return np.rint(split.images[:, 0, 0, 0] * scale).astype(int).tolist()


def write_npz(path: Path, sites: dict[str, list[str] | list[int]], **extra: np.ndarray) -> Path:
    arrays: dict[str, np.ndarray] = {}
    for split, ids in sites.items():
        data = tagged(len(ids), 100.0)
        arrays[f"{split}_images"] = data.images
        arrays[f"{split}_labels"] = data.labels
        arrays[f"{split}_site"] = np.asarray(ids)
    np.savez(path, **{**arrays, **extra})
    return path


def hospital(path: Path, pid: int, count: int, **overrides: object) -> SiteData:
    config = app_config(
        dataset="medmnist" if path.suffix == ".npz" else "folder",
        data_path=str(path),
        partitioner="natural",
        min_examples=1,
        **overrides,
    )
    return simulated_hospital(config.data, config.seed, pid, count)


@pytest.mark.parametrize(
    ("sites", "expected"),
    [
        (["b", "a", "b", "c", "a"], [[1, 4], [0, 2], [3]]),  # sorted by name: a, b, c
        ([10, 2, 2, 10, 7], [[1, 2], [4], [0, 3]]),  # integer ids sorted as numbers
        (["site-10", "site-9"], [[0], [1]]),  # names sort as text
        (["only"] * 3, [[0, 1, 2]]),
    ],
)
def test_site_indices_give_each_sorted_site_its_examples(
    sites: list[str] | list[int], expected: list[list[int]]
) -> None:
    parts = site_indices(np.asarray(sites), len(expected), "`test`")

    assert [p.tolist() for p in parts] == expected
    assert all(p.dtype == np.int64 for p in parts)


def test_site_indices_refuse_another_number_of_hospitals() -> None:
    with pytest.raises(ConfigError) as caught:
        site_indices(np.asarray(["b", "a", "b"]), 3, "`sites.npz`")

    assert str(caught.value) == (
        "Invalid value for `hospitals`. Expected 2 simulated hospitals, one per site in "
        "`sites.npz` (a, b). Received: 3"
    )


def test_npz_hospital_i_gets_site_i_with_its_own_splits(tmp_path: Path) -> None:
    path = write_npz(
        tmp_path / "sites.npz",
        {
            "train": ["west", "east", "west", "east", "west", "east"],
            "val": ["east", "west"],
            "test": ["west", "west", "east"],
        },
    )

    east, west = (hospital(path, pid, 2, val_fraction=0.0) for pid in range(2))

    assert [east.name, west.name] == ["hospital-0", "hospital-1"]
    assert tags(east.train, 100) == [1, 3, 5]
    assert tags(west.train, 100) == [0, 2, 4]
    assert east.val is not None
    assert west.val is not None
    assert tags(east.val, 100) == [0]
    assert tags(west.val, 100) == [1]
    assert tags(east.test, 100) == [2]
    assert tags(west.test, 100) == [0, 1]
    assert east.train.labels.tolist() == [1, 1, 1]  # labels travel with their images


def test_npz_site_without_a_test_split_holds_one_out(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "sites.npz", {"train": [1, 1, 1, 1, 2, 2], "test": [2, 2]})

    first = hospital(path, 0, 2, val_fraction=0.0, holdout_fraction=0.25)

    assert sorted(tags(first.train, 100) + tags(first.test, 100)) == [0, 1, 2, 3]
    assert len(first.test) == 2  # a quarter of each class, at least one where a class has 2+


@pytest.mark.parametrize(
    ("sites", "count", "message"),
    [
        ({"train": ["a", "b", "a"]}, 3, "Invalid value for `hospitals`. Expected 2 simulated "
         "hospitals, one per site in `{path}` (a, b). Received: 3"),
        ({"train": [3, 1, 2, 1], "test": [4, 4]}, 3, "Invalid value for `hospitals`. Expected 4 "
         "simulated hospitals, one per site in `{path}` (1, 2, 3, 4). Received: 3"),
    ],
    ids=["names", "ids, one only in test"],
)  # fmt: skip
def test_npz_mismatch_is_one_line(
    tmp_path: Path, sites: dict[str, list[str] | list[int]], count: int, message: str
) -> None:
    path = write_npz(tmp_path / "sites.npz", sites)

    with pytest.raises(ConfigError) as caught:
        hospital(path, 0, count)

    assert str(caught.value) == message.format(path=path)


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"train_site": None}, "`{path}`: missing key `train_site` (the `natural` partitioner "
         "needs the site of every image of every split)"),
        ({"train_site": np.asarray(["a", "b"])}, "`{path}:train_site`: 2 sites but 4 images"),
        ({"train_site": np.asarray([0.5, 1.5, 0.5, 1.5])}, "`{path}:train_site`: expected site "
         "names or integer ids shaped (N,), received float64 (4,)"),
    ],
    ids=["missing", "wrong length", "float ids"],
)  # fmt: skip
def test_bad_site_arrays_are_named(
    tmp_path: Path, arrays: dict[str, np.ndarray | None], problem: str
) -> None:
    data = tagged(4, 100.0)
    values = {"train_images": data.images, "train_labels": data.labels}
    values.update({key: value for key, value in arrays.items() if value is not None})
    path = tmp_path / "sites.npz"
    np.savez(path, **values)

    with pytest.raises(DataError) as caught:
        hospital(path, 0, 2)

    assert caught.value.problems == [problem.format(path=path)]


def write_site(root: Path, splits: dict[str, Split], flat: bool) -> None:
    """A site folder: ``root/<class>/`` (train only) if ``flat``, else ``root/<split>/<class>/``."""
    if flat:
        write_image_folder(root.parent / "_flat", splits, CLASSES)
        (root.parent / "_flat" / "train").rename(root)
        (root.parent / "_flat").rmdir()
    else:
        write_image_folder(root, splits, CLASSES)


def folder_split(values: list[int]) -> Split:
    """Uniform images of grey ``value / 255``; labels alternate."""
    images = np.asarray(values, np.float32)[:, None, None, None] / 255.0
    return Split(
        np.broadcast_to(images, (len(values), 28, 28, 1)).copy(), np.arange(len(values)) % 2
    )


def test_folder_hospital_i_gets_site_folder_i(tmp_path: Path) -> None:
    root = tmp_path / "sites"
    write_site(
        root / "b-hospital",
        {"train": folder_split([10, 11, 12, 13]), "test": folder_split([20, 21])},
        flat=False,
    )
    write_site(root / "a-hospital", {"train": folder_split([30, 31, 32, 33, 34])}, flat=True)

    first, second = (hospital(root, pid, 2, val_fraction=0.0) for pid in range(2))

    def greys(split: Split) -> list[int]:
        return sorted(tags(split, 255))

    assert sorted(greys(first.train) + greys(first.test)) == [30, 31, 32, 33, 34]  # a-hospital
    assert len(first.test) == 2  # held out of its train folder (holdout-fraction 0.2, per class)
    assert greys(second.train) == [10, 11, 12, 13]
    assert greys(second.test) == [20, 21]


def test_folder_mismatch_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "sites"
    for site in ("x", "y"):
        write_site(root / site, {"train": folder_split([1, 2, 3, 4])}, flat=True)

    with pytest.raises(ConfigError) as caught:
        hospital(root, 0, 5)

    assert str(caught.value) == (
        f"Invalid value for `hospitals`. Expected 2 simulated hospitals, one per site in "
        f"`{root}` (x, y). Received: 5"
    )

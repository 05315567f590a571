from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.data.medmnist import load_medmnist
from common.data.schema import DataSpec
from common.errors import DataError

Writer = Callable[[Path], None]

SPEC = DataSpec(("normal", "pneumonia"), image_size=8, channels=1, min_examples=1)


def images(n: int = 4, size: int = 8, channels: int | None = None) -> np.ndarray:
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    return np.arange(np.prod(shape), dtype=np.int64).reshape(shape).astype(np.uint8)


def labels(n: int = 4, column: bool = False) -> np.ndarray:
    values = (np.arange(n) % 2).astype(np.uint8)
    return values[:, None] if column else values


def write_npz(folder: Path, **arrays: Any) -> Path:
    path = folder / "site.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("column", [False, True], ids=["labels (N,)", "labels (N,1)"])
def test_loads_every_split_in_model_form(tmp_path: Path, column: bool) -> None:
    path = write_npz(
        tmp_path,
        train_images=images(4),
        train_labels=labels(4, column),
        val_images=images(2),
        val_labels=labels(2, column),
        test_images=images(3),
        test_labels=labels(3, column),
    )

    splits = load_medmnist(path, SPEC, "hospital-0")

    assert {name: len(split) for name, split in splits.items()} == {
        "train": 4,
        "val": 2,
        "test": 3,
    }
    np.testing.assert_allclose(splits["train"].images[..., 0], images(4) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(splits["test"].labels, [0, 1, 0])
    assert splits["train"].labels.dtype == np.int64


def test_loads_colour_images(tmp_path: Path) -> None:
    colour = DataSpec(SPEC.class_names, image_size=8, channels=3, min_examples=1)
    path = write_npz(tmp_path, train_images=images(4, channels=3), train_labels=labels(4))

    splits = load_medmnist(path, colour, "hospital-0")

    assert splits["train"].images.shape == (4, 8, 8, 3)


def test_returns_only_the_splits_present(tmp_path: Path) -> None:
    path = write_npz(tmp_path, train_images=images(), train_labels=labels())

    assert list(load_medmnist(path, SPEC, "hospital-0")) == ["train"]


def write_text(path: Path) -> None:
    path.write_text("not an archive")


def write_truncated(path: Path) -> None:
    np.savez(path, train_images=images(), train_labels=labels())
    path.write_bytes(path.read_bytes()[:100])


def write_npy(path: Path) -> None:
    with path.open("wb") as file:
        np.save(file, images())


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (None, "file not found"),
        (write_text, "not a readable .npz archive"),
        (write_truncated, "not a readable .npz archive"),
        (write_npy, "expected an .npz archive, received a .npy array"),
    ],
    ids=["missing file", "text file", "truncated archive", "npy array"],
)
def test_rejects_unreadable_files(tmp_path: Path, write: Writer | None, problem: str) -> None:
    path = tmp_path / "site.npz"
    if write is not None:
        write(path)

    with pytest.raises(DataError) as caught:
        load_medmnist(path, SPEC, "hospital-3")

    assert caught.value.problems == [f"`{path}`: {problem}"]
    assert str(caught.value) == f"Invalid data in hospital-3: `{path}`: {problem}"


@pytest.mark.parametrize(
    ("arrays", "problems"),
    [
        (
            {"train_images": images()},
            ["`{path}`: missing key `train_labels` (keys found: train_images)"],
        ),
        (
            {"test_images": images(), "test_labels": labels()},
            [
                "`{path}`: missing key `train_images` (keys found: test_images, test_labels)",
                "`{path}`: missing key `train_labels` (keys found: test_images, test_labels)",
            ],
        ),
        (
            {"train_images": images(), "train_labels": labels(), "test_images": images()},
            [
                "`{path}`: missing key `test_labels` "
                "(keys found: test_images, train_images, train_labels)"
            ],
        ),
        (
            {"train_images": images(size=9), "train_labels": labels()},
            ["`{path}:train` images: expected 8x8 pixels, received 9x9"],
        ),
        (
            {"train_images": images(), "train_labels": labels() + 2},
            ["`{path}:train` labels: expected values in 0..1 (normal, pneumonia), received 2..3"],
        ),
        (
            {"train_images": np.full((4, 8, 8), np.nan), "train_labels": labels()},
            ["`{path}:train` images: contain NaN or Inf"],
        ),
        (
            {"train_images": images(), "train_labels": np.array([0, 1, 0, "x"], dtype=object)},
            [
                "`{path}:train_labels`: unreadable array "
                "(Object arrays cannot be loaded when allow_pickle=False)"
            ],
        ),
        (
            {
                "train_images": images(size=9),
                "train_labels": labels(),
                "test_images": images(),
                "test_labels": labels(3),
            },
            [
                "`{path}:train` images: expected 8x8 pixels, received 9x9",
                "`{path}:test`: 4 images but 3 labels",
            ],
        ),
    ],
    ids=[
        "images without labels",
        "no train split",
        "test images without labels",
        "wrong image size",
        "labels out of range",
        "NaN pixels",
        "pickled labels",
        "problems in two splits",
    ],
)
def test_rejects_bad_arrays_naming_file_and_key(
    tmp_path: Path, arrays: dict[str, np.ndarray], problems: list[str]
) -> None:
    path = write_npz(tmp_path, **arrays)

    with pytest.raises(DataError) as caught:
        load_medmnist(path, SPEC, "hospital-3")

    assert caught.value.problems == [problem.format(path=path) for problem in problems]
    assert caught.value.source == "hospital-3"

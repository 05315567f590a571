from __future__ import annotations

import numpy as np
import pytest

from common.data.schema import DataSpec, SiteData, Split, check_min_examples, make_split
from common.errors import DataError


def spec(channels: int = 1, size: int = 4, min_examples: int = 1) -> DataSpec:
    return DataSpec(("normal", "pneumonia"), size, channels, min_examples)


def grey(n: int = 2, size: int = 4, dtype: type = np.uint8) -> np.ndarray:
    return np.zeros((n, size, size), dtype=dtype)


@pytest.mark.parametrize(
    ("images", "labels", "channels", "shape"),
    [
        (grey(3), np.array([0, 1, 0]), 1, (3, 4, 4, 1)),
        (grey(3), np.array([[0], [1], [0]], dtype=np.uint8), 1, (3, 4, 4, 1)),
        (np.zeros((3, 4, 4, 1), np.float64), np.array([0, 1, 1]), 1, (3, 4, 4, 1)),
        (np.zeros((3, 4, 4, 3), np.uint8), np.array([1, 1, 0]), 3, (3, 4, 4, 3)),
        (grey(2), np.array([0.0, 1.0]), 1, (2, 4, 4, 1)),
        (grey(2), np.array([False, True]), 1, (2, 4, 4, 1)),
    ],
    ids=["labels (N,)", "labels (N,1)", "float (N,H,W,1)", "colour", "whole floats", "bool"],
)
def test_make_split_accepts_supported_shapes(
    images: np.ndarray, labels: np.ndarray, channels: int, shape: tuple[int, ...]
) -> None:
    split = make_split(images, labels, spec(channels), "w")

    assert split.images.shape == shape
    assert split.images.dtype == np.float32
    assert split.labels.dtype == np.int64
    np.testing.assert_array_equal(split.labels, labels.reshape(-1).astype(np.int64))


def test_make_split_scales_uint8_to_unit_range() -> None:
    images = np.arange(32, dtype=np.uint8).reshape(2, 4, 4) * 8

    split = make_split(images, np.array([0, 1]), spec(), "w")

    np.testing.assert_allclose(split.images[..., 0], images / 255.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (grey(size=5), np.array([0, 1]), "`w` images: expected 4x4 pixels, received 5x5"),
        (
            grey(),
            np.array([0, 2]),
            "`w` labels: expected values in 0..1 (normal, pneumonia), received 0..2",
        ),
        (
            grey(),
            np.array([-1, 0]),
            "`w` labels: expected values in 0..1 (normal, pneumonia), received -1..0",
        ),
        (grey(dtype=np.float32) + np.nan, np.array([0, 1]), "`w` images: contain NaN or Inf"),
        (
            grey(dtype=np.float32) + 2.0,
            np.array([0, 1]),
            "`w` images: expected float pixels in [0, 1], received [2, 2]",
        ),
        (
            grey(dtype=np.uint16) + 300,
            np.array([0, 1]),
            "`w` images: expected pixels in 0..255, received 300..300",
        ),
        (
            grey(dtype=np.bool_),
            np.array([0, 1]),
            "`w` images: expected integer or float pixels, received bool",
        ),
        (
            np.zeros((2, 4, 4, 3), np.uint8),
            np.array([0, 1]),
            "`w` images: expected 1 channel(s), received 3",
        ),
        (
            np.zeros((2, 4, 4, 2), np.uint8),
            np.array([0, 1]),
            "`w` images: expected shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), "
            "received (2, 4, 4, 2)",
        ),
        (grey(3), np.array([0, 1]), "`w`: 3 images but 2 labels"),
        (
            grey(),
            np.zeros((2, 2), np.int64),
            "`w` labels: expected shape (N,) or (N, 1), received (2, 2)",
        ),
        (grey(), np.array([0.5, 1.0]), "`w` labels: expected integers, received float64"),
        (grey(), np.array([np.nan, 1.0]), "`w` labels: expected integers, received float64"),
        (grey(), np.array(["a", "b"]), "`w` labels: expected integers, received <U1"),
    ],
    ids=[
        "wrong size",
        "label too large",
        "negative label",
        "NaN pixels",
        "float pixels above 1",
        "int pixels above 255",
        "bool pixels",
        "channel mismatch",
        "two channels",
        "count mismatch",
        "2-D labels",
        "fractional labels",
        "NaN label",
        "string labels",
    ],
)
def test_make_split_rejects_with_exact_message(
    images: np.ndarray, labels: np.ndarray, message: str
) -> None:
    with pytest.raises(DataError) as caught:
        make_split(images, labels, spec(), "w")

    assert caught.value.problems == [message]
    assert str(caught.value) == f"Invalid data in w: {message}"


def test_make_split_reports_every_problem_at_once() -> None:
    with pytest.raises(DataError) as caught:
        make_split(grey(size=5, dtype=np.float32) + np.nan, np.array([0, 7]), spec(), "w")

    assert caught.value.problems == [
        "`w` labels: expected values in 0..1 (normal, pneumonia), received 0..7",
        "`w` images: expected 4x4 pixels, received 5x5",
        "`w` images: contain NaN or Inf",
    ]


def test_check_min_examples_names_each_short_split() -> None:
    small = Split(np.zeros((2, 4, 4, 1), np.float32), np.array([0, 1]))
    large = Split(np.zeros((5, 4, 4, 1), np.float32), np.zeros(5, np.int64))
    site = SiteData("hospital-0", ("normal", "pneumonia"), train=large, test=small)

    with pytest.raises(DataError) as caught:
        check_min_examples(site, spec(min_examples=3))

    assert str(caught.value) == (
        "Invalid data in hospital-0: `test` split: expected at least 3 examples, received 2"
    )

"""The data contract every hospital's data meets before training starts.

Loaders return raw arrays; :func:`make_split` validates them and converts them to the
one in-memory form the model sees: float32 images in [0, 1] shaped (N, H, W, C) and
int64 labels shaped (N,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import DataError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class DataSpec:
    """What the federation declares about every hospital's images."""

    class_names: tuple[str, ...]
    image_size: int
    channels: int
    min_examples: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Split:
    """One split of one hospital: images (N, H, W, C) float32 in [0, 1], labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: np.ndarray) -> Split:
        return Split(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class SiteData:
    """A hospital's validated data. ``val`` (None: the hospital has none) scores the global
    model each round to choose the best round; ``test`` is for the reported scores."""

    name: str
    class_names: tuple[str, ...]
    train: Split
    test: Split
    val: Split | None = None

    def class_counts(self, split: Split) -> list[int]:
        return np.bincount(split.labels, minlength=len(self.class_names)).tolist()


def make_split(images: np.ndarray, labels: np.ndarray, spec: DataSpec, where: str) -> Split:
    """Validate raw arrays of one split and convert them to the model's form.

    Accepts labels shaped (N,) or (N, 1); grey images (N, H, W) or (N, H, W, 1);
    colour images (N, H, W, 3); uint8 pixels in 0..255 or floats in [0, 1].
    Raises :class:`DataError` listing every problem found, each naming ``where``.
    """
    problems = validation_problems(images, labels, spec, where)
    if problems:
        raise DataError(where, problems)
    return Split(images=_to_model_images(images, spec), labels=_to_labels(labels))


def validation_problems(
    images: np.ndarray, labels: np.ndarray, spec: DataSpec, where: str
) -> list[str]:
    """Every reason why (images, labels) cannot be one split under ``spec``."""
    problems: list[str] = []
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    numeric_labels = _is_real_number(labels.dtype) or labels.dtype == np.bool_
    if labels.ndim != 1:
        problems.append(f"`{where}` labels: expected shape (N,) or (N, 1), received {labels.shape}")
    if not numeric_labels:
        problems.append(f"`{where}` labels: expected integers, received {labels.dtype}")
    elif labels.ndim == 1 and labels.size and not np.issubdtype(labels.dtype, np.integer):
        with np.errstate(invalid="ignore"):
            whole = np.equal(np.mod(labels, 1), 0)
        if not np.all(whole):
            problems.append(f"`{where}` labels: expected integers, received {labels.dtype}")
    if numeric_labels and labels.ndim == 1 and labels.size:
        low, high = labels.min(), labels.max()
        if low < 0 or high >= spec.num_classes:
            problems.append(
                f"`{where}` labels: expected values in 0..{spec.num_classes - 1} "
                f"({', '.join(spec.class_names)}), received {low}..{high}"
            )
    expected_hw = (spec.image_size, spec.image_size)
    grey = images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 1)
    colour = images.ndim == 4 and images.shape[3] == 3
    if not (grey or colour):
        problems.append(
            f"`{where}` images: expected shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), "
            f"received {images.shape}"
        )
    elif tuple(images.shape[1:3]) != expected_hw:
        problems.append(
            f"`{where}` images: expected {expected_hw[0]}x{expected_hw[1]} pixels, "
            f"received {images.shape[1]}x{images.shape[2]}"
        )
    elif (3 if colour else 1) != spec.channels:
        problems.append(
            f"`{where}` images: expected {spec.channels} channel(s), received {3 if colour else 1}"
        )
    if labels.ndim == 1 and images.ndim >= 1 and images.shape[0] != labels.shape[0]:
        problems.append(f"`{where}`: {images.shape[0]} images but {labels.shape[0]} labels")
    problems.extend(_pixel_problems(images, where))
    return problems


def _pixel_problems(images: np.ndarray, where: str) -> list[str]:
    if not _is_real_number(images.dtype):
        return [f"`{where}` images: expected integer or float pixels, received {images.dtype}"]
    if images.size == 0 or images.dtype == np.uint8:
        return []
    if not np.issubdtype(images.dtype, np.floating):
        low, high = images.min(), images.max()
        if low < 0 or high > 255:
            return [f"`{where}` images: expected pixels in 0..255, received {low}..{high}"]
        return []
    if not np.all(np.isfinite(images)):
        return [f"`{where}` images: contain NaN or Inf"]
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        return [
            f"`{where}` images: expected float pixels in [0, 1], received [{low:.3g}, {high:.3g}]"
        ]
    return []


def _is_real_number(dtype: np.dtype) -> bool:
    return bool(np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))


def _to_model_images(images: np.ndarray, spec: DataSpec) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if np.issubdtype(images.dtype, np.floating):
        return images.astype(np.float32, copy=False)
    return (images.astype(np.float32) / 255.0).reshape((-1, *spec.input_shape))


def _to_labels(labels: np.ndarray) -> np.ndarray:
    return labels.reshape(-1).astype(np.int64)


def check_min_examples(site: SiteData, spec: DataSpec) -> None:
    """Refuse a site whose splits are too small to train or evaluate on."""
    problems = [
        f"`{name}` split: expected at least {spec.min_examples} examples, received {len(split)}"
        for name, split in (("train", site.train), ("test", site.test))
        if len(split) < spec.min_examples
    ]
    if problems:
        raise DataError(site.name, problems)

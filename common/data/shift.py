"""Simulated scanners: per-hospital acquisition differences applied to real images.

Every function takes images shaped (N, H, W, C) with values in [0, 1] and returns new
images of the same shape and dtype, clipped to [0, 1]. :func:`scanner_profile` draws one
hospital's scanner from ``(seed, hospital)`` and a ``strength``; :func:`apply_scanner`
images a split through it in acquisition order: detector resolution, blur (the point
spread), contrast, brightness, then noise.

At ``strength`` 1 ("moderate") a hospital's scanner has an intensity offset in
[-0.1, 0.1], a contrast factor in [1/1.3, 1.3] about each image's mean, a Gaussian blur of
sigma in [0, 1] pixels, Gaussian noise of sd in [0, 0.05] and a resolution scale in
[0.5, 1] (downsampled to that share of the width, then upsampled back). A strength ``s``
multiplies each offset, sigma, sd and log contrast by ``s`` and divides the resolution by
``1 + s·u`` (u in [0, 1]); the same hospital keeps the direction of its shift at any
strength, and strength 0 changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from common.data.schema import SiteData, Split
from common.errors import ConfigError, invalid_value

MODERATE_INTENSITY = 0.1  # largest |intensity offset| at strength 1
MODERATE_CONTRAST = 1.3  # contrast factors in [1 / this, this] at strength 1
MODERATE_BLUR = 1.0  # largest blur sigma (pixels) at strength 1
MODERATE_NOISE = 0.05  # largest noise sd at strength 1
MODERATE_DOWNSCALE = 1.0  # resolution scale in [1 / (1 + this), 1] at strength 1
_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class ScannerProfile:
    """One hospital's acquisition differences."""

    intensity: float  # added to every pixel
    contrast: float  # multiplies each pixel's deviation from its image's mean
    blur: float  # Gaussian blur sigma, pixels
    noise: float  # sd of the Gaussian pixel noise
    resolution: float  # in (0, 1]: the image is resampled at this share of its width


def scanner_profile(seed: int, hospital: int, strength: float) -> ScannerProfile:
    """Hospital ``hospital``'s scanner; identical for identical arguments."""
    if seed < 0 or hospital < 0:
        key, value = ("seed", seed) if seed < 0 else ("hospital", hospital)
        raise ConfigError(invalid_value(key, "an integer >= 0", value))
    if not (math.isfinite(strength) and strength >= 0.0):
        raise ConfigError(invalid_value("shift-strength", "a finite number >= 0", strength))
    signed = np.random.default_rng([seed, hospital, 7]).uniform(-1.0, 1.0, 5)
    intensity, contrast, blur, noise, resolution = signed
    return ScannerProfile(
        intensity=float(strength * MODERATE_INTENSITY * intensity),
        contrast=float(MODERATE_CONTRAST ** (strength * contrast)),
        blur=float(strength * MODERATE_BLUR * abs(blur)),
        noise=float(strength * MODERATE_NOISE * abs(noise)),
        resolution=float(1.0 / (1.0 + strength * MODERATE_DOWNSCALE * abs(resolution))),
    )


def shift_site(site: SiteData, profile: ScannerProfile, seed: int, hospital: int) -> SiteData:
    """``site`` with every split imaged by ``profile``'s scanner (noise seeded per split)."""

    def shifted(name: str, split: Split) -> Split:
        rng = np.random.default_rng([seed, hospital, 8, _SPLIT_STREAMS[name]])
        return Split(apply_scanner(split.images, profile, rng), split.labels)

    val = None if site.val is None else shifted("val", site.val)
    return replace(
        site, train=shifted("train", site.train), test=shifted("test", site.test), val=val
    )


def apply_scanner(
    images: np.ndarray, profile: ScannerProfile, rng: np.random.Generator
) -> np.ndarray:
    images = change_resolution(images, profile.resolution)
    images = gaussian_blur(images, profile.blur)
    images = scale_contrast(images, profile.contrast)
    images = shift_intensity(images, profile.intensity)
    return add_noise(images, profile.noise, rng)


def shift_intensity(images: np.ndarray, offset: float) -> np.ndarray:
    _check_images(images)
    return _clipped(images + np.asarray(offset, images.dtype), images.dtype)


def scale_contrast(images: np.ndarray, factor: float) -> np.ndarray:
    """Each pixel's deviation from its own image's mean (over H, W and C) times ``factor``."""
    _check_images(images)
    if not (math.isfinite(factor) and factor >= 0.0):
        raise ConfigError(invalid_value("factor", "a finite number >= 0", factor))
    mean = images.mean(axis=(1, 2, 3), keepdims=True, dtype=np.float64)
    return _clipped(mean + factor * (images - mean), images.dtype)


def add_noise(images: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    _check_images(images)
    if not (math.isfinite(sd) and sd >= 0.0):
        raise ConfigError(invalid_value("sd", "a finite number >= 0", sd))
    if sd == 0.0:
        return images.copy()
    noise = rng.normal(0.0, sd, size=images.shape).astype(images.dtype)
    return _clipped(images + noise, images.dtype)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian of ``sigma`` pixels over -r..r, r = max(1, ceil(3 sigma))."""
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over H and W; borders repeat the edge pixel."""
    _check_images(images)
    if not (math.isfinite(sigma) and sigma >= 0.0):
        raise ConfigError(invalid_value("sigma", "a finite number >= 0", sigma))
    if sigma == 0.0:
        return images.copy()
    kernel = gaussian_kernel(sigma).astype(images.dtype)
    radius = kernel.size // 2
    out = images
    for axis in (1, 2):
        padding = [(0, 0)] * 4
        padding[axis] = (radius, radius)
        padded = np.pad(out, padding, mode="edge")
        length = out.shape[axis]
        out = sum(
            (
                weight * np.take(padded, np.arange(k, k + length), axis=axis)
                for k, weight in enumerate(kernel)
            ),
            start=np.zeros_like(out),
        )
    return _clipped(out, images.dtype)


def change_resolution(images: np.ndarray, scale: float) -> np.ndarray:
    """Resample H and W to ``round(scale · size)`` pixels (area average), then back (linear)."""
    _check_images(images)
    if not (math.isfinite(scale) and 0.0 < scale <= 1.0):
        raise ConfigError(invalid_value("scale", "a number > 0 and <= 1", scale))
    out = images
    for axis in (1, 2):
        size = images.shape[axis]
        low = max(1, round(scale * size))
        if low == size:
            continue
        down = area_matrix(size, low).astype(images.dtype)
        up = linear_matrix(low, size).astype(images.dtype)
        out = np.moveaxis(np.tensordot(up @ down, out, axes=([1], [axis])), 0, axis)
    return _clipped(out, images.dtype)


def area_matrix(size: int, new_size: int) -> np.ndarray:
    """(new_size, size): each output pixel averages the input it covers (new_size <= size)."""
    edges = np.arange(new_size + 1) * (size / new_size)
    starts, ends = edges[:-1, None], edges[1:, None]
    pixels = np.arange(size)[None, :]
    overlap = np.clip(np.minimum(ends, pixels + 1) - np.maximum(starts, pixels), 0.0, None)
    return overlap / (size / new_size)


def linear_matrix(size: int, new_size: int) -> np.ndarray:
    """(new_size, size): linear interpolation between pixel centres, edges held."""
    centres = np.clip((np.arange(new_size) + 0.5) * (size / new_size) - 0.5, 0.0, size - 1)
    left = np.floor(centres).astype(int)
    right = np.minimum(left + 1, size - 1)
    frac = centres - left
    matrix = np.zeros((new_size, size))
    rows = np.arange(new_size)
    np.add.at(matrix, (rows, left), 1.0 - frac)
    np.add.at(matrix, (rows, right), frac)
    return matrix


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
        received = f"{images.dtype} {images.shape}"
        raise ConfigError(invalid_value("images", "a float array (N, H, W, C)", received))


def _clipped(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(np.clip(values, 0.0, 1.0), dtype=dtype)

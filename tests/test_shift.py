"""Simulated scanners (common/data/shift.py): each transform against a hand-computed value."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from common.data.schema import SiteData, Split
from common.data.shift import (
    MODERATE_BLUR,
    MODERATE_CONTRAST,
    MODERATE_DOWNSCALE,
    MODERATE_INTENSITY,
    MODERATE_NOISE,
    ScannerProfile,
    add_noise,
    apply_scanner,
    change_resolution,
    gaussian_blur,
    gaussian_kernel,
    scale_contrast,
    scanner_profile,
    shift_intensity,
    shift_site,
)
from common.errors import ConfigError

NO_SHIFT = ScannerProfile(intensity=0.0, contrast=1.0, blur=0.0, noise=0.0, resolution=1.0)


def one_image(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, np.float32)[None, :, :, None]


def random_batch(
    n: int = 3, size: int = 12, channels: int = 1, dtype: type = np.float32
) -> np.ndarray:
    return np.random.default_rng(0).random((n, size, size, channels)).astype(dtype)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0.1, [[0.3, 1.0, 0.1]]),  # 0.95 + 0.1 clipped at 1
        (-0.3, [[0.0, 0.65, 0.0]]),  # 0.2 - 0.3 and 0.0 - 0.3 clipped at 0
        (0.0, [[0.2, 0.95, 0.0]]),
    ],
)
def test_intensity_offset_clips_at_0_and_1(offset: float, expected: list[list[float]]) -> None:
    images = one_image([[0.2, 0.95, 0.0]])

    shifted = shift_intensity(images, offset)

    np.testing.assert_allclose(shifted, one_image(expected), atol=1e-6)


@pytest.mark.parametrize(
    ("factor", "expected"),
    [
        (2.0, [[0.0, 0.3], [0.7, 1.0]]),  # mean 0.5: 0.5 + 2·(x - 0.5), -0.1 and 1.1 clipped
        (0.5, [[0.35, 0.45], [0.55, 0.65]]),
        (0.0, [[0.5, 0.5], [0.5, 0.5]]),
        (1.0, [[0.2, 0.4], [0.6, 0.8]]),
    ],
)
def test_contrast_scales_deviations_from_the_image_mean(
    factor: float, expected: list[list[float]]
) -> None:
    images = one_image([[0.2, 0.4], [0.6, 0.8]])

    scaled = scale_contrast(images, factor)

    np.testing.assert_allclose(scaled, one_image(expected), atol=1e-6)


def test_contrast_uses_each_images_own_mean() -> None:
    images = np.concatenate([one_image([[0.0, 0.2]]), one_image([[0.6, 1.0]])])

    scaled = scale_contrast(images, 0.5)

    # means 0.1 and 0.8: 0.1 ± 0.05 and 0.8 ± 0.1
    np.testing.assert_allclose(scaled[:, 0, :, 0], [[0.05, 0.15], [0.7, 0.9]], atol=1e-6)


def test_gaussian_kernel_of_sigma_1() -> None:
    weights = [math.exp(-(x**2) / 2.0) for x in range(-3, 4)]  # radius ceil(3·1) = 3
    expected = [w / sum(weights) for w in weights]

    np.testing.assert_allclose(gaussian_kernel(1.0), expected, rtol=1e-12)
    assert gaussian_kernel(0.1).size == 3  # radius at least 1


def test_blur_of_a_delta_is_the_kernel_outer_product() -> None:
    delta = np.zeros((1, 15, 15, 1), np.float32)
    delta[0, 7, 7, 0] = 1.0
    weights = np.exp(-(np.arange(-3, 4) ** 2) / 2.0)  # sigma 1, radius 3
    kernel = weights / weights.sum()
    expected = np.zeros((15, 15))
    expected[4:11, 4:11] = np.outer(kernel, kernel)

    blurred = gaussian_blur(delta, 1.0)

    np.testing.assert_allclose(blurred[0, :, :, 0], expected, atol=1e-7)
    assert blurred[0, 7, 7, 0] == pytest.approx(0.3990503**2, rel=1e-5)  # centre weight²


def test_blur_keeps_a_constant_image_and_sigma_0_changes_nothing() -> None:
    constant = np.full((2, 9, 9, 3), 0.37, np.float32)
    images = random_batch()

    np.testing.assert_allclose(gaussian_blur(constant, 2.0), constant, atol=1e-6)
    np.testing.assert_array_equal(gaussian_blur(images, 0.0), images)


@pytest.mark.parametrize("scale", [0.9, 0.5, 0.3, 0.25, 0.1])
def test_downsample_then_upsample_keeps_a_constant_image(scale: float) -> None:
    constant = np.full((2, 28, 28, 1), 0.4, np.float32)

    np.testing.assert_allclose(change_resolution(constant, scale), constant, atol=1e-6)


def test_half_resolution_of_a_ramp() -> None:
    images = one_image([[0.0, 0.2, 0.4, 0.6]] * 4)  # constant down each column

    resampled = change_resolution(images, 0.5)

    # area average to [0.1, 0.5], then linear between the two pixel centres (at 0.5 and 2.5
    # in input pixels) read at 0, 1, 2, 3 input centres: 0.1, 0.1 + 0.4/4, 0.5 - 0.4/4, 0.5
    np.testing.assert_allclose(resampled, one_image([[0.1, 0.2, 0.4, 0.5]] * 4), atol=1e-6)


def test_one_pixel_resolution_leaves_each_images_mean() -> None:
    images = random_batch()

    resampled = change_resolution(images, 0.01)  # 12 · 0.01 rounds to 0: one pixel

    means = images.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(resampled, np.broadcast_to(means, images.shape), atol=1e-6)
    np.testing.assert_array_equal(change_resolution(images, 1.0), images)


def test_noise_has_the_requested_spread_and_follows_the_rng() -> None:
    images = np.full((4, 32, 32, 1), 0.5, np.float32)

    first = add_noise(images, 0.05, np.random.default_rng(3))
    again = add_noise(images, 0.05, np.random.default_rng(3))

    np.testing.assert_array_equal(first, again)
    assert float(np.std(first - images)) == pytest.approx(0.05, rel=0.05)  # 4,096 draws
    np.testing.assert_array_equal(add_noise(images, 0.0, np.random.default_rng(3)), images)


TRANSFORMS: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
    ("intensity", lambda x: shift_intensity(x, 0.5)),
    ("contrast", lambda x: scale_contrast(x, 3.0)),
    ("blur", lambda x: gaussian_blur(x, 1.2)),
    ("noise", lambda x: add_noise(x, 0.5, np.random.default_rng(0))),
    ("resolution", lambda x: change_resolution(x, 0.4)),
    ("scanner", lambda x: apply_scanner(x, scanner_profile(1, 2, 3.0), np.random.default_rng(0))),
]


@pytest.mark.parametrize(("name", "transform"), TRANSFORMS, ids=[n for n, _ in TRANSFORMS])
@pytest.mark.parametrize(("dtype", "channels"), [(np.float32, 1), (np.float64, 3)])
def test_images_keep_shape_dtype_and_range(
    name: str, transform: Callable[[np.ndarray], np.ndarray], dtype: type, channels: int
) -> None:
    images = random_batch(channels=channels, dtype=dtype)

    out = transform(images)

    assert out.shape == images.shape
    assert out.dtype == images.dtype
    assert float(out.min()) >= 0.0
    assert float(out.max()) <= 1.0
    assert not np.array_equal(out, images)


def test_the_profile_is_decided_by_seed_and_hospital() -> None:
    first = scanner_profile(seed=5, hospital=2, strength=1.0)

    assert scanner_profile(5, 2, 1.0) == first
    assert scanner_profile(5, 3, 1.0) != first
    assert scanner_profile(6, 2, 1.0) != first


def test_strength_0_is_no_shift() -> None:
    images = random_batch()

    profile = scanner_profile(5, 2, 0.0)

    assert profile == NO_SHIFT
    np.testing.assert_array_equal(apply_scanner(images, profile, np.random.default_rng(0)), images)


def test_moderate_ranges_hold_at_strength_1() -> None:
    profiles = [scanner_profile(seed, hospital, 1.0) for seed in range(5) for hospital in range(40)]

    for p in profiles:
        assert abs(p.intensity) <= MODERATE_INTENSITY
        assert 1 / MODERATE_CONTRAST <= p.contrast <= MODERATE_CONTRAST
        assert 0.0 <= p.blur <= MODERATE_BLUR
        assert 0.0 <= p.noise <= MODERATE_NOISE
        assert 1 / (1 + MODERATE_DOWNSCALE) <= p.resolution <= 1.0
    # the draws use their ranges, not a corner of them
    assert max(abs(p.intensity) for p in profiles) > 0.9 * MODERATE_INTENSITY
    assert min(p.contrast for p in profiles) < 0.8
    assert max(p.contrast for p in profiles) > 1.25


def test_strength_scales_the_same_hospitals_shift() -> None:
    moderate = scanner_profile(4, 1, 1.0)

    strong = scanner_profile(4, 1, 2.0)

    assert strong.intensity == pytest.approx(2 * moderate.intensity)
    assert math.log(strong.contrast) == pytest.approx(2 * math.log(moderate.contrast))
    assert strong.blur == pytest.approx(2 * moderate.blur)
    assert strong.noise == pytest.approx(2 * moderate.noise)
    assert 1 / strong.resolution - 1 == pytest.approx(2 * (1 / moderate.resolution - 1))


def test_shift_site_images_every_split_with_one_scanner() -> None:
    images = np.full((6, 12, 12, 1), 0.5, np.float32)
    labels = np.arange(6) % 2
    site = SiteData("hospital-0", ("a", "b"), Split(images, labels), Split(images, labels), None)
    profile = ScannerProfile(intensity=0.2, contrast=1.0, blur=0.0, noise=0.01, resolution=1.0)

    shifted = shift_site(site, profile, seed=1, hospital=0)
    again = shift_site(site, profile, seed=1, hospital=0)

    assert shifted.val is None
    np.testing.assert_array_equal(shifted.train.images, again.train.images)
    np.testing.assert_array_equal(shifted.train.labels, labels)
    for split in (shifted.train, shifted.test):
        assert float(split.images.mean()) == pytest.approx(0.7, abs=0.002)
    assert not np.array_equal(shifted.train.images, shifted.test.images)  # own noise per split


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: scanner_profile(0, 0, -1.0),
         "Invalid value for `shift-strength`. Expected a finite number >= 0. Received: -1.0"),
        (lambda: scanner_profile(-1, 0, 1.0),
         "Invalid value for `seed`. Expected an integer >= 0. Received: -1"),
        (lambda: shift_intensity(np.zeros((2, 4, 4, 1), np.uint8), 0.1),
         "Invalid value for `images`. Expected a float array (N, H, W, C). "
         "Received: 'uint8 (2, 4, 4, 1)'"),
        (lambda: change_resolution(np.zeros((1, 4, 4, 1), np.float32), 0.0),
         "Invalid value for `scale`. Expected a number > 0 and <= 1. Received: 0.0"),
        (lambda: gaussian_blur(np.zeros((1, 4, 4, 1), np.float32), -1.0),
         "Invalid value for `sigma`. Expected a finite number >= 0. Received: -1.0"),
    ],
    ids=["negative strength", "negative seed", "integer pixels", "zero scale", "negative sigma"],
)  # fmt: skip
def test_rejects_bad_arguments(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        call()

    assert str(caught.value) == message

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.data import synthetic
from common.data.schema import DataSpec
from common.data.synthetic import (
    EXPOSURE_SD,
    MIMIC_FRACTION,
    OCCULT_FRACTION,
    HospitalProfile,
    generate_images,
    hospital_profile,
    synthetic_labels,
    synthetic_site,
)
from common.errors import ConfigError
from common.metrics import binary_auc

NAMES = ("normal", "pneumonia", "covid", "other")
QUIET = HospitalProfile(intensity=0.0, contrast=1.0, noise=0.0, prevalence=0.5,
                        num_train=1, num_test=1)  # fmt: skip


def spec(classes: int = 2, size: int = 28, channels: int = 1, min_examples: int = 10) -> DataSpec:
    return DataSpec(NAMES[:classes], size, channels, min_examples)


def test_same_seed_and_hospital_give_identical_sites() -> None:
    first, second = synthetic_site(7, 2, 60, spec()), synthetic_site(7, 2, 60, spec())

    for a, b in ((first.train, second.train), (first.test, second.test)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert first.name == "hospital-2"


@pytest.mark.parametrize(("seed", "hospital"), [(7, 3), (8, 2)], ids=["hospital", "seed"])
def test_other_hospital_or_seed_differs(seed: int, hospital: int) -> None:
    base = synthetic_site(7, 2, 60, spec())

    other = synthetic_site(seed, hospital, 60, spec())

    assert hospital_profile(seed, hospital, 60) != hospital_profile(7, 2, 60)
    n = min(len(base.train), len(other.train))
    assert not np.array_equal(base.train.images[:n], other.train.images[:n])


@pytest.mark.parametrize(
    ("classes", "size", "channels"),
    [(2, 16, 1), (2, 28, 1), (2, 32, 3), (3, 28, 1), (4, 20, 3)],
)
def test_site_meets_the_data_contract(classes: int, size: int, channels: int) -> None:
    site = synthetic_site(0, 1, 40, spec(classes, size, channels))

    for split in (site.train, site.test):
        assert split.images.shape[1:] == (size, size, channels)
        assert split.images.dtype == np.float32
        assert split.images.min() >= 0.0
        assert split.images.max() <= 1.0
        assert set(np.unique(split.labels)) <= set(range(classes))
    if channels == 3:
        np.testing.assert_array_equal(site.train.images[..., 0], site.train.images[..., 2])


@pytest.mark.parametrize("hospital", range(8))
def test_profile_stays_in_its_ranges_and_sizes_the_site(hospital: int) -> None:
    profile = hospital_profile(3, hospital, 200)

    site = synthetic_site(3, hospital, 200, spec())

    assert -0.08 <= profile.intensity <= 0.08
    assert 0.75 <= profile.contrast <= 1.25
    assert 0.01 <= profile.noise <= 0.06
    assert 0.25 <= profile.prevalence <= 0.75
    assert 100 <= profile.num_train <= 300
    assert profile.num_test == round(0.25 * profile.num_train)
    assert (len(site.train), len(site.test)) == (profile.num_train, profile.num_test)
    positives = int(np.count_nonzero(site.train.labels))
    assert positives == round(profile.prevalence * profile.num_train)


@pytest.mark.parametrize("classes", [3, 4])
@pytest.mark.parametrize("base", [1, 40, 300])
def test_every_hospital_has_every_class_in_both_splits(classes: int, base: int) -> None:
    """Both splits have at least ``min-examples`` (10) images, so every class of up to 10
    appears at every hospital, however small its prevalence or size."""
    for hospital in range(12):
        site = synthetic_site(5, hospital, base, spec(classes))

        for split in (site.train, site.test):
            assert np.bincount(split.labels, minlength=classes).min() >= 1


def test_tiny_base_is_raised_to_min_examples() -> None:
    site = synthetic_site(0, 0, 2, spec(min_examples=12))

    assert (len(site.train), len(site.test)) == (12, 12)


@pytest.mark.parametrize(
    ("count", "prevalence", "classes", "counts"),
    [
        (10, 0.3, 2, [7, 3]),
        (10, 0.0, 2, [9, 1]),  # both classes whenever count >= 2
        (10, 1.0, 2, [1, 9]),
        (9, 0.5, 3, [5, 2, 2]),  # round(4.5) = 4 not in class 0, shared evenly
        (1, 0.5, 2, [1, 0]),
        (10, 0.1, 3, [8, 1, 1]),  # every class whenever count >= classes
        (10, 0.0, 4, [7, 1, 1, 1]),
        (4, 0.9, 4, [1, 1, 1, 1]),
        (3, 0.5, 4, [1, 1, 1, 0]),  # fewer images than classes: not every class
        (2, 0.5, 3, [1, 1, 0]),
    ],
)
def test_labels_follow_prevalence_exactly(
    count: int, prevalence: float, classes: int, counts: list[int]
) -> None:
    labels = synthetic_labels(np.random.default_rng(0), count, prevalence, classes)

    assert np.bincount(labels, minlength=classes).tolist() == counts


def test_opacities_make_positive_lungs_brighter() -> None:
    labels = np.repeat([0, 1], 1000)

    images = generate_images(np.random.default_rng(0), labels, QUIET, spec())

    means = images.mean(axis=(1, 2, 3))
    # the exposure (sd EXPOSURE_SD per image) blurs each mean; the class means stay apart
    standard_error = EXPOSURE_SD * np.sqrt(2 / 1000)
    assert means[labels == 1].mean() - means[labels == 0].mean() > 0.03 + 4 * standard_error


def test_exposure_shifts_whole_images_and_hides_the_brightness_shortcut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the per-image exposure an image's mean brightness alone ranks the classes
    about as well as an oracle (AUC ~0.91), so even an untrained network's output
    does: the task would be solved, or inverted, before any training."""
    n = 1000
    labels = np.repeat([0, 1], n)
    exposed = generate_images(np.random.default_rng(3), labels, QUIET, spec())
    monkeypatch.setattr(synthetic, "EXPOSURE_SD", 0.0)
    unexposed = generate_images(np.random.default_rng(3), labels, QUIET, spec())

    # one brightness shift per image, normal with sd EXPOSURE_SD (median: robust to clipping)
    shift = np.median((exposed - unexposed).reshape(2 * n, -1), axis=1)
    assert np.std(shift) == pytest.approx(EXPOSURE_SD, rel=4 / np.sqrt(2 * 2 * n))
    auc_sd = np.sqrt((2 * n + 1) / (12 * n * n))  # of random scores; an upper bound here
    shortcut = binary_auc(labels == 1, unexposed.mean(axis=(1, 2, 3)))
    hidden = binary_auc(labels == 1, exposed.mean(axis=(1, 2, 3)))
    assert shortcut > 0.85
    assert hidden < shortcut - 10 * auc_sd
    assert hidden < 0.8


def test_some_positives_and_normals_look_exactly_alike() -> None:
    """The same random stream renders the same anatomy for any labels, so each positive
    has a normal twin; the twins are identical exactly when the positive's opacities are
    occult and the normal has no look-alike, or the positive's are visible and the normal
    has a look-alike (one lung zone with two classes): no classifier can tell them apart."""
    n = 4000
    expected = OCCULT_FRACTION * (1 - MIMIC_FRACTION) + (1 - OCCULT_FRACTION) * MIMIC_FRACTION

    positives = generate_images(np.random.default_rng(5), np.ones(n, np.int64), QUIET, spec())
    normals = generate_images(np.random.default_rng(5), np.zeros(n, np.int64), QUIET, spec())

    identical = np.all(positives == normals, axis=(1, 2, 3)).mean()
    standard_error = np.sqrt(expected * (1 - expected) / n)
    assert abs(identical - expected) < 4 * standard_error


def logistic_regression(images: np.ndarray, labels: np.ndarray, steps: int = 300) -> np.ndarray:
    """Weights (bias last) of an L2-regularised logistic regression on standardised pixels."""
    x = np.hstack([images.reshape(len(images), -1), np.ones((len(images), 1))])
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        w -= 0.5 * (x.T @ (p - labels) / len(labels) + 1e-3 * w)
    return w


def test_a_linear_model_learns_the_task_but_cannot_separate_it() -> None:
    profile = dataclasses.replace(QUIET, noise=0.04, contrast=0.9, intensity=0.02)
    labels = np.repeat([0, 1], 1000)
    train = generate_images(np.random.default_rng(1), labels, profile, spec())
    test = generate_images(np.random.default_rng(2), labels, profile, spec())
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6

    w = logistic_regression((train - mean) / std, labels)
    flat = ((test - mean) / std).reshape(len(test), -1)
    auc = binary_auc(labels == 1, flat @ w[:-1] + w[-1])

    # chance: the AUC of random scores has mean 0.5 and this standard deviation
    n1 = n0 = 1000
    chance_sd = np.sqrt((n1 + n0 + 1) / (12 * n1 * n0))
    assert auc > 0.5 + 6 * chance_sd
    # the identical twins above cap any classifier well below 1
    assert auc < 0.95


def test_class_decides_the_lung_zone_of_the_opacities() -> None:
    labels = np.repeat([0, 1, 2], 200)
    images = generate_images(np.random.default_rng(0), labels, QUIET, spec(classes=3))[..., 0]

    excess = [images[labels == k].mean(axis=0) - images[labels == 0].mean(axis=0) for k in (1, 2)]

    top, bottom = slice(0, 14), slice(14, 28)
    assert excess[0][top].sum() > 2 * excess[0][bottom].sum()
    assert excess[1][bottom].sum() > 2 * excess[1][top].sum()


def test_noise_follows_the_profile() -> None:
    labels = np.zeros(50, dtype=np.int64)
    noisy = dataclasses.replace(QUIET, noise=0.05)

    clean = generate_images(np.random.default_rng(1), labels, QUIET, spec())
    rough = generate_images(np.random.default_rng(1), labels, noisy, spec())

    centre = (slice(None), slice(4, 24), slice(4, 24))  # away from clipping at 0
    assert np.std(rough[centre] - clean[centre]) == pytest.approx(0.05, rel=0.1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hospital_profile(-1, 0, 10), "Invalid value for `seed`. Expected an integer "
         ">= 0. Received: -1"),
        (lambda: hospital_profile(0, -2, 10), "Invalid value for `hospital`. Expected an integer "
         ">= 0. Received: -2"),
        (lambda: hospital_profile(0, 0, 0), "Invalid value for `base_examples`. Expected an "
         "integer >= 1. Received: 0"),
        (lambda: synthetic_site(0, 0, 10, spec(size=15)), "Invalid value for `image_size`. "
         "Expected an integer >= 16. Received: 15"),
        (lambda: synthetic_site(0, 0, 10, spec(channels=2)), "Invalid value for `channels`. "
         "Expected 1 or 3. Received: 2"),
        (lambda: synthetic_site(0, 0, 10, spec(classes=1)), "Invalid value for `class_names`. "
         "Expected at least 2 classes. Received: ('normal',)"),
        (lambda: generate_images(np.random.default_rng(0), np.array([0, 2]), QUIET, spec()),
         "Invalid value for `labels`. Expected a 1-D array of values in 0..1. "
         "Received: 'shape (2,), values 0..2'"),
    ],
    ids=["seed", "hospital", "base", "size", "channels", "classes", "labels"],
)  # fmt: skip
def test_rejects_bad_arguments(call: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        call()  # type: ignore[operator]

    assert str(caught.value) == message

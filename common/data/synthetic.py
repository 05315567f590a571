"""Deterministic synthetic chest-X-ray-like images with a learnable class signal.

Every image shows a dark background, a body, two soft bright lung fields, a
mediastinum/spine band and faint rib stripes, with per-image anatomical jitter.
Class 0 ("normal") has faint benign specks; class k > 0 adds two or three soft bright
opacities inside a lung, in the k-th of K - 1 vertical lung zones — except occult cases,
which show none, while a few normals show a look-alike shadow, so the classes overlap and
no model separates them. Every image has its own exposure (a brightness shift), so
an image's overall brightness says little about its class: a model has to find the
opacities. Each simulated hospital has its own intensity offset, contrast, noise,
prevalence and size, all drawn from (seed, hospital).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.data.schema import DataSpec, SiteData, make_split
from common.errors import ConfigError, invalid_value

_PIXELS_PER_CHUNK = 1 << 22  # bounds the memory of one rendering pass
_MAX_BLOBS = 3
# The class signal is deliberately imperfect, as in real chest X-rays: some positives show
# no opacity (early or occult disease) and some normals show a look-alike (a benign
# shadow), pixel for pixel like a positive. No model can separate the classes; an oracle
# that sees the opacities exactly reaches an AUC of about 0.9 (measured on 2,000 images).
# Without a per-image exposure, an image's mean brightness alone ranks the classes as well
# as that oracle (AUC 0.91), and so does the nearly constant output of an untrained network,
# with a sign set by chance: FedAvg's first round then ended at AUC 0.9 or, for some seeds,
# 0.1. With EXPOSURE_SD = 0.06 the mean brightness reaches an AUC of about 0.7.
# The 5-seed measurement behind these values is in the README (Data).
LESION_AMPLITUDE = (0.35, 0.60)  # peak brightness one opacity adds inside a lung
OCCULT_FRACTION = 0.10  # positives whose opacities are invisible
MIMIC_FRACTION = 0.08  # normals with an opacity-like shadow
EXPOSURE_SD = 0.06  # sd of the brightness added to all pixels of one image (its exposure)


@dataclass(frozen=True)
class HospitalProfile:
    """How one simulated hospital's scanner and population differ from the others."""

    intensity: float  # added to every pixel
    contrast: float  # multiplies deviations from mid-grey
    noise: float  # standard deviation of the Gaussian pixel noise
    prevalence: float  # fraction of examples not in class 0
    num_train: int
    num_test: int


def hospital_profile(seed: int, hospital: int, base_examples: int) -> HospitalProfile:
    _check_seed(seed, hospital)
    if base_examples < 1:
        raise ConfigError(invalid_value("base_examples", "an integer >= 1", base_examples))
    rng = np.random.default_rng([seed, hospital, 0])
    intensity, contrast, noise, prevalence, size = rng.uniform(
        [-0.08, 0.75, 0.01, 0.25, 0.5], [0.08, 1.25, 0.06, 0.75, 1.5]
    )
    num_train = max(1, round(base_examples * size))
    return HospitalProfile(
        intensity=float(intensity),
        contrast=float(contrast),
        noise=float(noise),
        prevalence=float(prevalence),
        num_train=num_train,
        num_test=max(1, round(0.25 * num_train)),
    )


def synthetic_labels(
    rng: np.random.Generator, count: int, prevalence: float, num_classes: int
) -> np.ndarray:
    """``count`` shuffled int64 labels; ``round(prevalence * count)`` are not class 0.

    Every class appears whenever ``count >= num_classes`` (class 0 and some other class
    whenever ``count >= 2``): the non-class-0 count is raised to at least K - 1 and kept
    below ``count``, then spread as evenly as possible over classes 1..K-1.
    """
    if num_classes < 2:
        raise ConfigError(invalid_value("num_classes", "an integer >= 2", num_classes))
    positives = round(prevalence * count)
    if count >= 2:
        positives = min(max(positives, num_classes - 1), count - 1)
    labels = np.zeros(count, dtype=np.int64)
    labels[:positives] = 1 + np.arange(positives) % (num_classes - 1)
    return rng.permutation(labels)


def generate_images(
    rng: np.random.Generator, labels: np.ndarray, profile: HospitalProfile, spec: DataSpec
) -> np.ndarray:
    """Float32 images (N, H, W, C) in [0, 1] for ``labels``, as ``profile``'s scanner sees them."""
    _check_spec(spec)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes)):
        values = f", values {labels.min()}..{labels.max()}" if labels.size else ""
        received = f"shape {labels.shape}{values}"
        expected = f"a 1-D array of values in 0..{spec.num_classes - 1}"
        raise ConfigError(invalid_value("labels", expected, received))
    count, size = labels.shape[0], spec.image_size
    params = _draw_parameters(rng, labels, spec.num_classes)
    grey = np.empty((count, size, size), dtype=np.float32)
    chunk = max(1, _PIXELS_PER_CHUNK // (size * size))
    for start in range(0, count, chunk):
        part = slice(start, min(start + chunk, count))
        image = _render({name: value[part] for name, value in params.items()}, size)
        exposure = params["exposure"][part, None, None]
        image = (image - 0.3) * profile.contrast + 0.3 + profile.intensity + exposure
        image += rng.normal(0.0, profile.noise, size=image.shape).astype(np.float32)
        grey[part] = np.clip(image, 0.0, 1.0)
    images = grey[..., np.newaxis]
    return np.repeat(images, 3, axis=3) if spec.channels == 3 else images


def synthetic_site(seed: int, hospital: int, base_examples: int, spec: DataSpec) -> SiteData:
    """Hospital ``hospital``'s train, test and val splits; identical for identical arguments.

    ``val`` (as large as ``test``) is drawn after the others, so they do not depend on it."""
    _check_spec(spec)
    profile = hospital_profile(seed, hospital, base_examples)
    rng = np.random.default_rng([seed, hospital, 1])
    name = f"hospital-{hospital}"
    splits = {}
    for split, count in (
        ("train", profile.num_train),
        ("test", profile.num_test),
        ("val", profile.num_test),
    ):
        labels = synthetic_labels(
            rng, max(count, spec.min_examples), profile.prevalence, spec.num_classes
        )
        images = generate_images(rng, labels, profile, spec)
        splits[split] = make_split(images, labels, spec, where=f"synthetic:{name}:{split}")
    return SiteData(
        name=name,
        class_names=spec.class_names,
        train=splits["train"],
        test=splits["test"],
        val=splits["val"],
    )


def _draw_parameters(
    rng: np.random.Generator, labels: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """Per-image anatomy and lesion parameters, in coordinates where the image is [-1, 1]²."""
    n = int(labels.shape[0])
    scale = rng.uniform(0.95, 1.05, n)
    params: dict[str, np.ndarray] = {
        "dx": rng.uniform(-0.05, 0.05, n),
        "dy": rng.uniform(-0.05, 0.05, n),
        "scale": scale,
        "rib_phase": rng.uniform(0.0, 2 * np.pi, n),
        "rib_amp": rng.uniform(0.05, 0.10, n),
    }
    # Opacities: class k > 0 puts 2-3 blobs in lung zone k - 1 of K - 1 (top to bottom),
    # except the occult cases; a few normals show the same kind of shadow in a random zone.
    zones = num_classes - 1
    occult = rng.random(n) < OCCULT_FRACTION
    mimic = rng.random(n) < MIMIC_FRACTION
    shows = np.where(labels > 0, ~occult, mimic)
    zone = np.where(labels > 0, labels - 1, rng.integers(0, zones, n))[:, None]
    side = rng.choice([-1.0, 1.0], size=(n, _MAX_BLOBS))
    zone_pos = (zone + rng.uniform(0.0, 1.0, (n, _MAX_BLOBS))) / zones  # 0..1, top to bottom
    rel_y = -0.75 + 1.5 * zone_pos  # within the lung, as a fraction of its half height
    half_width = 0.6 * np.sqrt(1.0 - rel_y**2)
    rel_x = rng.uniform(-1.0, 1.0, (n, _MAX_BLOBS)) * half_width
    used = np.arange(_MAX_BLOBS)[None, :] < rng.integers(2, _MAX_BLOBS + 1, (n, 1))
    params["blob_x"] = params["dx"][:, None] + side * 0.42 * scale[:, None] + rel_x * 0.30
    params["blob_y"] = params["dy"][:, None] + rel_y * 0.62 * scale[:, None]
    params["blob_sigma"] = rng.uniform(0.18, 0.26, (n, _MAX_BLOBS))
    params["blob_amp"] = rng.uniform(*LESION_AMPLITUDE, (n, _MAX_BLOBS)) * (used & shows[:, None])
    # Benign specks, in every class: small and faint.
    params["speck_x"] = rng.uniform(-0.7, 0.7, (n, _MAX_BLOBS))
    params["speck_y"] = rng.uniform(-0.6, 0.6, (n, _MAX_BLOBS))
    params["speck_amp"] = rng.uniform(0.0, 0.06, (n, _MAX_BLOBS))
    params["exposure"] = rng.normal(0.0, EXPOSURE_SD, n)
    return {name: value.astype(np.float32) for name, value in params.items()}


def _render(p: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Noise-free grey images (n, size, size) from per-image parameters."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    x, y = axis[None, None, :], axis[:, None][None]
    dx, dy, scale = (p[k][:, None, None] for k in ("dx", "dy", "scale"))

    def ellipse(cx: np.ndarray, cy: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
        inside = 1.0 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2
        return 0.5 + 0.5 * np.tanh(inside / np.float32(0.3))  # soft edge; sigmoid(inside/0.15)

    body = ellipse(dx, dy, 0.9 * scale, 0.98 * scale)
    lungs = np.maximum(
        ellipse(dx - 0.42 * scale, dy, 0.30 * scale, 0.62 * scale),
        ellipse(dx + 0.42 * scale, dy, 0.30 * scale, 0.62 * scale),
    )
    spine = np.exp(-(((x - dx) / 0.13) ** 2)) * body
    ribs = 0.5 + 0.5 * np.sin(2 * np.pi * (4.5 * y + 0.35 * x**2) + p["rib_phase"][:, None, None])
    image = 0.05 + 0.12 * body + 0.30 * lungs + 0.25 * spine
    image += p["rib_amp"][:, None, None] * ribs * lungs
    for b in range(_MAX_BLOBS):
        blob = _gaussian(x, y, p["blob_x"][:, b], p["blob_y"][:, b], p["blob_sigma"][:, b])
        image += p["blob_amp"][:, b, None, None] * blob * lungs
        speck = _gaussian(x, y, p["speck_x"][:, b], p["speck_y"][:, b], np.float32(0.05))
        image += p["speck_amp"][:, b, None, None] * speck * body
    return image.astype(np.float32)


def _gaussian(
    x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray, sigma: np.ndarray | np.float32
) -> np.ndarray:
    sigma = np.broadcast_to(sigma, cx.shape)[:, None, None]
    squared = (x - cx[:, None, None]) ** 2 + (y - cy[:, None, None]) ** 2
    return np.exp(-squared / (2 * sigma**2))


def _check_seed(seed: int, hospital: int) -> None:
    if seed < 0:
        raise ConfigError(invalid_value("seed", "an integer >= 0", seed))
    if hospital < 0:
        raise ConfigError(invalid_value("hospital", "an integer >= 0", hospital))


def _check_spec(spec: DataSpec) -> None:
    if spec.image_size < 16:
        raise ConfigError(invalid_value("image_size", "an integer >= 16", spec.image_size))
    if spec.channels not in (1, 3):
        raise ConfigError(invalid_value("channels", "1 or 3", spec.channels))
    if spec.num_classes < 2:
        raise ConfigError(invalid_value("class_names", "at least 2 classes", spec.class_names))

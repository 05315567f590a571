"""Every partitioner, with and without scanner shift: each example lands in exactly one hospital.

The pooled ``.npz`` tags each image with its index in its first pixel. A shifted hospital is
compared with its unshifted self: it must be exactly that hospital imaged through its own
scanner, so the shift moves no example between hospitals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.data.schema import SiteData
from common.data.shift import scanner_profile, shift_site
from simulations.hospitals import simulated_hospital
from tests.factories import app_config

SIZES = {"train": 120, "val": 30, "test": 45}
SITES = ("st-anna", "city", "north")  # sorted: city, north, st-anna
SEED = 11


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, n in SIZES.items():
        images = rng.random((n, 28, 28, 1)).astype(np.float32) * 0.5
        images[:, 0, 0, 0] = np.arange(n) / 1000.0
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = rng.integers(0, 2, n)
        arrays[f"{split}_site"] = np.asarray(SITES)[np.arange(n) % len(SITES)]
    path = tmp_path_factory.mktemp("pool") / "pool.npz"
    np.savez(path, **arrays)
    return path


def hospitals(path: Path, partitioner: str, strength: float) -> list[SiteData]:
    config = app_config(
        dataset="medmnist",
        data_path=str(path),
        partitioner=partitioner,
        shift_strength=strength,
        min_examples=1,
        seed=SEED,
    )
    return [simulated_hospital(config.data, SEED, pid, len(SITES)) for pid in range(len(SITES))]


def tags(site: SiteData, split: str) -> list[int]:
    data = getattr(site, split)
    return [] if data is None else np.rint(data.images[:, 0, 0, 0] * 1000).astype(int).tolist()


@pytest.mark.parametrize(
    ("partitioner", "strength", "unshifted_partitioner"),
    [
        ("iid", 0.0, "iid"),
        ("dirichlet", 0.0, "dirichlet"),
        ("quantity", 0.0, "quantity"),
        ("natural", 0.0, "natural"),
        ("feature-shift", 1.0, "iid"),
        ("feature-shift", 2.5, "iid"),
        ("iid", 1.0, "iid"),
        ("dirichlet", 1.0, "dirichlet"),
        ("quantity", 0.5, "quantity"),
        ("natural", 1.0, "natural"),
    ],
)
def test_every_example_lands_in_exactly_one_hospital(
    pooled: Path, partitioner: str, strength: float, unshifted_partitioner: str
) -> None:
    plain = hospitals(pooled, unshifted_partitioner, 0.0)

    sites = hospitals(pooled, partitioner, strength)

    for split, n in SIZES.items():
        received = sorted(i for site in plain for i in tags(site, split))
        assert received == list(range(n)), split
    for pid, (site, base) in enumerate(zip(sites, plain, strict=True)):
        expected = base
        if strength > 0.0:
            expected = shift_site(base, scanner_profile(SEED, pid, strength), SEED, pid)
        for split in SIZES:
            mine, theirs = getattr(site, split), getattr(expected, split)
            np.testing.assert_array_equal(mine.images, theirs.images)
            np.testing.assert_array_equal(mine.labels, theirs.labels)
        if strength > 0.0:
            assert not np.array_equal(site.train.images, base.train.images)


def test_natural_hospitals_hold_their_sites_examples(pooled: Path) -> None:
    sites = hospitals(pooled, "natural", 0.0)

    for pid, site in enumerate(sites):
        position = SITES.index(sorted(SITES)[pid])  # hospital i = i-th site by name
        for split, n in SIZES.items():
            assert tags(site, split) == list(range(position, n, len(SITES)))

"""Simulated hospitals cut from one file: `split_for_hospital` over every partition id.

Each pooled example carries its own index in its first pixel, so the tests can see which
examples each hospital received without knowing how the split is made.
"""

from __future__ import annotations

import numpy as np
import pytest

from common.data.schema import SiteData, Split
from common.errors import DataError
from simulations.hospitals import split_for_hospital
from tests.factories import app_config

CLASSES = ("normal", "pneumonia")
TRAIN, TEST = 240, 90


def tagged_split(n: int, seed: int) -> Split:
    """``n`` examples whose first pixel is ``index / n`` (unique), with random labels."""
    images = np.zeros((n, 28, 28, 1), np.float32)
    images[:, 0, 0, 0] = np.arange(n) / n
    labels = np.random.default_rng(seed).integers(0, len(CLASSES), n)
    return Split(images, labels)


def indices(split: Split, n: int) -> list[int]:
    return np.rint(split.images[:, 0, 0, 0] * n).astype(int).tolist()


POOLED = SiteData(
    name="pooled",
    class_names=CLASSES,
    train=tagged_split(TRAIN, seed=1),
    test=tagged_split(TEST, seed=2),
)


def hospitals(partitioner: str, count: int, seed: int, min_examples: int = 1) -> list[SiteData]:
    data = app_config(partitioner=partitioner, dirichlet_alpha=0.5, min_examples=min_examples)
    return [split_for_hospital(POOLED, data.data, seed, pid, count) for pid in range(count)]


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "quantity"])
@pytest.mark.parametrize("count", [1, 3, 5])
def test_every_example_lands_in_exactly_one_hospital(partitioner: str, count: int) -> None:
    sites = hospitals(partitioner, count, seed=7)

    train = [i for site in sites for i in indices(site.train, TRAIN)]
    test = [i for site in sites for i in indices(site.test, TEST)]
    assert sorted(train) == list(range(TRAIN))  # every training example once
    assert sorted(test) == list(range(TEST))  # every held-out example once
    assert sum(len(site.train) for site in sites) == TRAIN
    assert sum(len(site.test) for site in sites) == TEST
    assert [site.name for site in sites] == [f"hospital-{pid}" for pid in range(count)]
    for site in sites:
        assert site.class_names == CLASSES
        for split, pooled, n in ((site.train, POOLED.train, TRAIN), (site.test, POOLED.test, TEST)):
            assert split.labels.tolist() == pooled.labels[indices(split, n)].tolist()


def test_held_out_examples_are_split_evenly() -> None:
    sites = hospitals("dirichlet", 4, seed=7)  # label skew applies to training data only

    assert sorted(len(site.test) for site in sites) == [22, 22, 23, 23]


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "quantity"])
def test_the_seed_decides_the_split(partitioner: str) -> None:
    first = hospitals(partitioner, 4, seed=3)
    again = hospitals(partitioner, 4, seed=3)
    other = hospitals(partitioner, 4, seed=4)

    def shares(sites: list[SiteData]) -> list[tuple[list[int], list[int]]]:
        return [(indices(s.train, TRAIN), indices(s.test, TEST)) for s in sites]

    assert shares(first) == shares(again)
    assert shares(first) != shares(other)


def test_a_hospital_below_min_examples_is_refused() -> None:
    with pytest.raises(DataError) as caught:
        hospitals("iid", 4, seed=7, min_examples=30)  # 90 held-out examples: 22 or 23 each

    assert str(caught.value) in {
        f"Invalid data in hospital-0: `test` split: expected at least 30 examples, received {n}"
        for n in (22, 23)
    }

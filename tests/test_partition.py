from __future__ import annotations

import numpy as np
import pytest

from common.data.partition import PartitionKind, partition_indices
from common.errors import ConfigError

KINDS: list[PartitionKind] = ["iid", "dirichlet", "quantity"]


def labels(n: int = 600, classes: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def skew(parts: list[np.ndarray], y: np.ndarray) -> float:
    """Mean total-variation distance between each partition's label mix and the pool's."""
    classes = int(y.max()) + 1
    pool = np.bincount(y, minlength=classes) / y.size
    mixes = [np.bincount(y[p], minlength=classes) / p.size for p in parts]
    return float(np.mean([0.5 * np.abs(mix - pool).sum() for mix in mixes]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "partitions"), [(600, 5), (60, 3), (12, 4), (10, 1)])
def test_partitions_cover_every_index_exactly_once(
    kind: PartitionKind, n: int, partitions: int
) -> None:
    y = labels(n, classes=2)

    parts = partition_indices(y, partitions, kind, alpha=0.5, seed=1)

    assert len(parts) == partitions
    assert sum(p.size for p in parts) == n
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted, no repeats


@pytest.mark.parametrize("kind", ["iid", "quantity"])
def test_one_example_per_partition(kind: PartitionKind) -> None:
    parts = partition_indices(labels(7), 7, kind, 0.5, seed=0)

    assert sorted(p.tolist() for p in parts) == [[i] for i in range(7)]


@pytest.mark.parametrize("kind", KINDS)
def test_seed_decides_the_split(kind: PartitionKind) -> None:
    y = labels()

    first = partition_indices(y, 4, kind, 0.5, seed=3)
    again = partition_indices(y, 4, kind, 0.5, seed=3)
    other = partition_indices(y, 4, kind, 0.5, seed=4)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_iid_partitions_are_equal_sized() -> None:
    parts = partition_indices(labels(602), 4, "iid", 1.0, seed=0)

    assert [p.size for p in parts] == [151, 151, 150, 150]


@pytest.mark.parametrize("seed", range(3))
def test_dirichlet_skews_labels_far_more_than_iid(seed: int) -> None:
    y = labels(1000, classes=5, seed=seed)

    dirichlet = skew(partition_indices(y, 5, "dirichlet", 0.1, seed), y)
    iid = skew(partition_indices(y, 5, "iid", 0.1, seed), y)

    assert dirichlet > 0.35
    assert dirichlet > 4 * iid


def test_larger_alpha_skews_less() -> None:
    y = labels(3000, classes=5)

    skews = [
        np.mean([skew(partition_indices(y, 5, "dirichlet", a, s), y) for s in range(5)])
        for a in (0.1, 1.0, 100.0)
    ]

    assert skews[0] > skews[1] > skews[2]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("alpha", [0.05, 0.1, 1.0])
def test_dirichlet_works_for_small_federations(seed: int, alpha: float) -> None:
    y = np.arange(60) % 2

    parts = partition_indices(y, 3, "dirichlet", alpha, seed)

    assert min(p.size for p in parts) >= 1
    assert sum(p.size for p in parts) == 60


def test_quantity_skew_gives_unequal_sizes_but_iid_labels() -> None:
    y = labels(2000, classes=2)

    parts = partition_indices(y, 5, "quantity", 0.5, seed=0)

    sizes = [p.size for p in parts]
    assert max(sizes) > 3 * min(sizes)
    assert min(sizes) >= 10
    assert skew(parts, y) < 0.2  # small partitions deviate by chance alone


def test_accepts_labels_as_a_column() -> None:
    y = labels(50)

    flat = partition_indices(y, 2, "dirichlet", 0.5, seed=0)
    column = partition_indices(y[:, None], 2, "dirichlet", 0.5, seed=0)

    assert all(np.array_equal(a, b) for a, b in zip(flat, column, strict=True))


@pytest.mark.parametrize(
    ("y", "partitions", "kind", "alpha", "seed", "message"),
    [
        (labels(10), 0, "iid", 1.0, 0, "Invalid value for `num_partitions`. Expected an "
         "integer in 1..10 (at most one partition per example). Received: 0"),
        (labels(10), 11, "dirichlet", 1.0, 0, "Invalid value for `num_partitions`. Expected an "
         "integer in 1..10 (at most one partition per example). Received: 11"),
        (labels(10), 2, "dirichlet", 0.0, 0, "Invalid value for `alpha`. Expected a finite "
         "number > 0. Received: 0.0"),
        (labels(10), 2, "quantity", -1.0, 0, "Invalid value for `alpha`. Expected a finite "
         "number > 0. Received: -1.0"),
        (labels(10), 2, "dirichlet", float("nan"), 0, "Invalid value for `alpha`. Expected a "
         "finite number > 0. Received: nan"),
        (labels(10), 2, "shards", 1.0, 0, "Invalid value for `kind`. Expected one of iid, "
         "dirichlet, quantity. Received: 'shards'"),
        (labels(10), 2, "iid", 1.0, -1, "Invalid value for `seed`. Expected an integer >= 0. "
         "Received: -1"),
        (labels(10).astype(float), 2, "iid", 1.0, 0, "Invalid value for `labels`. Expected a "
         "1-D integer array. Received: 'float64 (10,)'"),
        (np.arange(40) % 2, 20, "dirichlet", 0.01, 0, "Invalid value for `dirichlet-alpha`. "
         "Expected a value large enough for each of 20 partitions to receive some of the "
         "40 examples (use a larger alpha or fewer partitions). Received: 0.01"),
    ],
    ids=["no partitions", "more partitions than examples", "alpha zero", "alpha negative",
         "alpha nan", "unknown kind", "negative seed", "float labels", "alpha too small"],
)  # fmt: skip
def test_rejects_bad_arguments(
    y: np.ndarray, partitions: int, kind: PartitionKind, alpha: float, seed: int, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        partition_indices(y, partitions, kind, alpha, seed)

    assert str(caught.value) == message

"""Split one labelled pool across simulated hospitals with flwr-datasets partitioners.

The partitioners work on a Hugging Face ``datasets.Dataset``; this module hands them
one made of the labels and the row indices, in an order shuffled by ``seed``, and
reads the indices back.

- ``iid``: :class:`IidPartitioner`, contiguous equal shards of the shuffled pool.
- ``dirichlet``: label skew, :class:`DirichletPartitioner` (per-class shares ~ Dir(alpha)).
- ``quantity``: quantity skew, :class:`SizePartitioner` with partition sizes drawn from
  Dir(alpha) over the partitions (as in NIID-Bench; smaller alpha = more unequal sizes).
  ``LinearPartitioner``/``ExponentialPartitioner`` ignore alpha and seed, and the
  exponential one leaves partitions empty beyond about 8 hospitals.
- ``feature-shift``: the ``iid`` split; each simulated hospital's images then pass through
  its own simulated scanner (``common/data/shift.py``, run config ``shift-strength``).
- ``natural``: one partition per site (:func:`site_indices`, :class:`NaturalIdPartitioner`),
  not a split of labels.
"""

from __future__ import annotations

import contextlib
import io
import math
import typing
import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np

from common.errors import ConfigError, invalid_value

if TYPE_CHECKING:
    import datasets
    from flwr_datasets.partitioner import Partitioner

# The one list of partitioner names; the run config's `partitioner` is typed with it.
PartitionKind = Literal["iid", "dirichlet", "quantity", "feature-shift", "natural"]
PARTITION_KINDS: tuple[PartitionKind, ...] = typing.get_args(PartitionKind)
# The kinds that split a pool by its labels (partition_indices); the others build on them.
LabelPartitionKind = Literal["iid", "dirichlet", "quantity"]
LABEL_PARTITION_KINDS: tuple[LabelPartitionKind, ...] = typing.get_args(LabelPartitionKind)

# Each partition aims for at least this many examples, or fewer when the pool is small.
_TARGET_MIN_SIZE = 10


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    kind: PartitionKind,
    alpha: float,
    seed: int,
) -> list[np.ndarray]:
    """One sorted int64 index array per partition; together they cover every index once.

    ``kind`` is one of :data:`LABEL_PARTITION_KINDS` (the split of ``feature-shift`` is
    ``iid``'s; ``natural`` splits by :func:`site_indices`).
    The same arguments always give the same split. ``alpha`` is the Dirichlet
    concentration of ``dirichlet`` and ``quantity`` (checked, but unused, for ``iid``).
    A Dirichlet split whose alpha is too small for the pool (for example 10 hospitals
    sharing 2 classes at alpha 0.1 leaves most hospitals without examples) raises
    :class:`ConfigError` instead of retrying forever.
    """
    labels = _check_arguments(labels, num_partitions, kind, alpha, seed)
    count = labels.shape[0]
    min_size = max(1, min(_TARGET_MIN_SIZE, count // (2 * num_partitions)))
    if kind == "dirichlet":
        # DirichletPartitioner resamples up to 10 times while a partition is smaller than
        # min_partition_size, then raises; relax the minimum (and reseed) before giving up.
        for attempt, relaxed in enumerate(_halvings(min_size)):
            attempt_seed = seed if attempt == 0 else _derived_seed(seed, attempt)
            parts = _run(_dirichlet(num_partitions, alpha, relaxed, attempt_seed), labels, seed)
            if parts is not None:
                return parts
        raise ConfigError(
            invalid_value(
                "dirichlet-alpha",
                f"a value large enough for each of {num_partitions} partitions to receive "
                f"some of the {count} examples (use a larger alpha or fewer partitions)",
                alpha,
            )
        )
    if kind == "quantity":
        partitioner = _sized(_quantity_sizes(count, num_partitions, alpha, min_size, seed))
    else:
        partitioner = _iid(num_partitions)
    parts = _run(partitioner, labels, seed)
    if parts is None:  # cannot happen with checked arguments
        raise RuntimeError(f"{kind} partitioning did not cover every example exactly once")
    return parts


def site_indices(sites: np.ndarray, num_partitions: int, where: str) -> list[np.ndarray]:
    """One sorted int64 index array per site, sites in sorted order (names or numbers).

    ``sites`` holds one site id per example; partition ``i`` is every example of the
    ``i``-th site. ``num_partitions`` must equal the number of sites, else
    :class:`ConfigError` names both (``where`` says where the sites come from).
    """
    if sites.ndim != 1 or not (
        np.issubdtype(sites.dtype, np.integer) or np.issubdtype(sites.dtype, np.str_)
    ):
        raise ConfigError(
            invalid_value("sites", "a 1-D array of site names or integer ids", str(sites.dtype))
        )
    names = np.unique(sites)
    if num_partitions != names.size:
        listed = ", ".join(str(name) for name in names)
        expected = f"{names.size} simulated hospitals, one per site in {where} ({listed})"
        raise ConfigError(invalid_value("hospitals", expected, num_partitions))
    import datasets  # deferred: importing it costs about a second
    from flwr_datasets.partitioner import NaturalIdPartitioner

    ids = sites.tolist()
    partitioner = NaturalIdPartitioner(partition_by="site")
    table = {"site": ids, "index": np.arange(sites.shape[0], dtype=np.int64)}
    partitioner.dataset = datasets.Dataset.from_dict(table).with_format("arrow")
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar, once per call
        parts = [
            np.sort(partitioner.load_partition(i)["index"].to_numpy().astype(np.int64))
            for i in range(num_partitions)
        ]
    if [ids[int(part[0])] for part in parts] != names.tolist():  # cannot happen: both sort
        raise RuntimeError("NaturalIdPartitioner did not order the sites by name")
    return parts


def _check_arguments(
    labels: np.ndarray, num_partitions: int, kind: str, alpha: float, seed: int
) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(
            invalid_value("labels", "a 1-D integer array", f"{labels.dtype} {labels.shape}")
        )
    if kind not in LABEL_PARTITION_KINDS:
        expected = f"one of {', '.join(LABEL_PARTITION_KINDS)}"
        raise ConfigError(invalid_value("kind", expected, kind))
    if isinstance(num_partitions, bool) or not 1 <= num_partitions <= labels.shape[0]:
        expected = f"an integer in 1..{labels.shape[0]} (at most one partition per example)"
        raise ConfigError(invalid_value("num_partitions", expected, num_partitions))
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(invalid_value("alpha", "a finite number > 0", alpha))
    if seed < 0:
        raise ConfigError(invalid_value("seed", "an integer >= 0", seed))
    return labels.astype(np.int64, copy=False)


def _run(partitioner: Partitioner, labels: np.ndarray, seed: int) -> list[np.ndarray] | None:
    """Partition ``labels`` shuffled by ``seed``; None if the partitioner gave up."""
    partitioner.dataset = _shuffled_dataset(labels, seed)
    try:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            # DirichletPartitioner warns on every resampling; the outcome is what matters.
            warnings.simplefilter("ignore")
            parts = [
                np.sort(partitioner.load_partition(i)["index"].to_numpy().astype(np.int64))
                for i in range(partitioner.num_partitions)
            ]
    except ValueError:
        return None
    covered = np.sort(np.concatenate(parts))
    if covered.shape != labels.shape or np.any(covered != np.arange(labels.shape[0])):
        return None
    return parts


def _shuffled_dataset(labels: np.ndarray, seed: int) -> datasets.Dataset:
    import datasets  # deferred: importing it costs about a second

    order = np.random.default_rng(seed).permutation(labels.shape[0])
    table = {"label": labels[order], "index": order.astype(np.int64)}
    # Arrow format: partitioners read whole columns, far faster than as Python lists.
    return datasets.Dataset.from_dict(table).with_format("arrow")


def _iid(num_partitions: int) -> Partitioner:
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=num_partitions)


def _dirichlet(num_partitions: int, alpha: float, min_size: int, seed: int) -> Partitioner:
    from flwr_datasets.partitioner import DirichletPartitioner

    return DirichletPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        alpha=float(alpha),
        min_partition_size=min_size,
        self_balancing=True,  # stops filling partitions above the mean size: fewer retries
        shuffle=False,  # indices are sorted afterwards anyway
        seed=seed,
    )


def _sized(sizes: list[int]) -> Partitioner:
    from flwr_datasets.partitioner import SizePartitioner

    return SizePartitioner(partition_sizes=sizes)


def _quantity_sizes(
    count: int, num_partitions: int, alpha: float, min_size: int, seed: int
) -> list[int]:
    """Sizes summing to ``count``, each at least ``min_size``, the rest shared ~ Dir(alpha)."""
    rng = np.random.default_rng([seed, 1])
    shares = rng.dirichlet(np.full(num_partitions, alpha))
    extra = rng.multinomial(count - min_size * num_partitions, shares)
    return [int(min_size + e) for e in extra]


def _derived_seed(seed: int, attempt: int) -> int:
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])


def _halvings(start: int) -> list[int]:
    """``start``, ``start // 2``, ... down to 1."""
    steps = [start]
    while steps[-1] > 1:
        steps.append(steps[-1] // 2)
    return steps

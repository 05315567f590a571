"""Many hospitals on one machine: the data each simulated hospital holds.

A simulated hospital is a Flower virtual SuperNode; Flower gives it ``partition-id``
and ``num-partitions``. With ``dataset = "synthetic"`` each hospital generates its own
images (its own scanner intensity, contrast, noise, prevalence and size). With a
MedMNIST file or an image folder, the training split is divided with the configured
partitioner (label or quantity skew) and the held-out and validation splits IID, so every hospital's
evaluation sees both classes and the examples-weighted federated metrics estimate the
metrics on the whole held-out split. ``partitioner = "natural"`` gives hospital ``i`` the
``i``-th site of the data (``common/data/natural.py``) with that site's own splits instead.
``shift-strength`` > 0 then images all of a hospital's splits through its own simulated
scanner (``common/data/shift.py``); ``partitioner = "feature-shift"`` is the IID split so shifted.

:func:`simulated_hospital` is what a ClientApp calls for a simulated hospital's data: the
runner hands it to ``client.app.build_client_app`` and ``pyproject.toml`` registers it as
the entry point ``simulated`` in ``fedclinic.site_resolvers`` for ``flwr run .``, so the
hospital side never imports this package. Under ``attack = "label-flip"`` the attacking
hospitals (:func:`simulations.attacks.attacker_ids`) train on flipped labels.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from common.config import AdversaryConfig, DataConfig
from common.data.natural import site_splits
from common.data.partition import partition_indices
from common.data.schema import SiteData, Split, check_min_examples
from common.data.shift import scanner_profile, shift_site
from common.data.site import load_splits, site_from_splits
from common.data.synthetic import synthetic_site
from common.errors import ConfigError, invalid_value
from simulations.attacks import attacker_ids, flip_labels


def hospital_name(partition_id: int) -> str:
    return f"hospital-{partition_id}"


def simulated_hospital(
    data: DataConfig,
    seed: int,
    partition_id: int,
    num_partitions: int,
    adversary: AdversaryConfig | None = None,
) -> SiteData:
    """The data of simulated hospital ``partition_id`` out of ``num_partitions``; with a
    ``label-flip`` ``adversary``, an attacker's training labels are flipped."""
    site = _honest_hospital(data, seed, partition_id, num_partitions)
    if (
        adversary is not None
        and adversary.attack == "label-flip"
        and partition_id in attacker_ids(seed, adversary.attack_fraction, num_partitions)
    ):
        flipped = flip_labels(site.train.labels, len(site.class_names))
        return replace(site, train=Split(site.train.images, flipped))
    return site


def _honest_hospital(
    data: DataConfig, seed: int, partition_id: int, num_partitions: int
) -> SiteData:
    site = _unshifted_hospital(data, seed, partition_id, num_partitions)
    if data.shift_strength == 0.0:
        return site
    profile = scanner_profile(seed, partition_id, data.shift_strength)
    return shift_site(site, profile, seed, partition_id)


def _unshifted_hospital(
    data: DataConfig, seed: int, partition_id: int, num_partitions: int
) -> SiteData:
    spec = data.spec()
    if data.dataset == "synthetic":
        site = synthetic_site(seed, partition_id, data.synthetic_examples, spec)
        check_min_examples(site, spec)
        return site
    name = hospital_name(partition_id)
    if data.partitioner == "natural":
        site_name, splits = site_splits(Path(data.data_path), spec, partition_id, num_partitions)
        source = f"{name} (site {site_name})"
        site = site_from_splits(
            source, splits, spec, data.holdout_fraction, seed, data.val_fraction
        )
        return replace(site, name=name)
    pooled = site_from_splits(
        name,
        load_splits(Path(data.data_path), spec, name),
        spec,
        data.holdout_fraction,
        seed,
        data.val_fraction,
    )
    return split_for_hospital(pooled, data, seed, partition_id, num_partitions)


def split_for_hospital(
    pooled: SiteData, data: DataConfig, seed: int, partition_id: int, num_partitions: int
) -> SiteData:
    """Cut one hospital's share out of pooled data, reproducibly for a given seed."""
    if data.partitioner == "natural":
        expected = "a partitioner that splits one pool (natural: one hospital per site)"
        raise ConfigError(invalid_value("partitioner", expected, data.partitioner))
    kind = "iid" if data.partitioner == "feature-shift" else data.partitioner
    train_parts = partition_indices(
        pooled.train.labels, num_partitions, kind, data.dirichlet_alpha, seed
    )
    test_parts = partition_indices(pooled.test.labels, num_partitions, "iid", 1.0, seed)
    val = None
    if pooled.val is not None:
        val_parts = partition_indices(pooled.val.labels, num_partitions, "iid", 1.0, seed)
        val = pooled.val.take(val_parts[partition_id])
    site = SiteData(
        name=hospital_name(partition_id),
        class_names=pooled.class_names,
        train=pooled.train.take(train_parts[partition_id]),
        test=pooled.test.take(test_parts[partition_id]),
        val=val if val is not None and len(val) else None,
    )
    check_min_examples(site, data.spec())
    return site

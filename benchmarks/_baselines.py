"""The accuracy benchmark's baselines and its small-data file.

- pooled (:func:`baselines`): one model trained on every hospital's training images together
  with the federation's optimizer, learning rate and augmentation, one epoch at a time, the
  best epoch chosen on the validation split as the coordinator chooses ``model.keras``;
- local-only: each hospital alone on its share, the federation's rounds of its local recipe,
  its best round chosen on its own validation images;
- :func:`write_train_subset`: a copy of a MedMNIST ``.npz`` whose training split is a
  stratified subset (validation and test splits unchanged).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.config import AppConfig, TrainConfig
from common.data.schema import Split
from common.files import write_atomic
from common.metrics import classification_metrics


def stratified_counts(class_counts: list[int], size: int) -> list[int]:
    """Images of each class in a subset of ``size``: proportional, largest remainders first,
    at least one of every class present (so that AUC is defined), never more than there are."""
    total = sum(class_counts)
    if not 0 < size <= total:
        raise ValueError(
            f"Invalid value for `--train-subset`. Expected an integer in [1, {total}]. "
            f"Received: {size}"
        )
    exact = [size * count / total for count in class_counts]
    counts = [
        min(count, max(1 if count else 0, math.floor(e)))
        for count, e in zip(class_counts, exact, strict=True)
    ]
    by_remainder = sorted(
        range(len(class_counts)), key=lambda c: (exact[c] - math.floor(exact[c]), -c), reverse=True
    )
    while sum(counts) < size:
        for c in by_remainder:
            if sum(counts) < size and counts[c] < class_counts[c]:
                counts[c] += 1
    while sum(counts) > size:  # the "at least one" floor overshot: take from the largest
        largest = max(range(len(counts)), key=lambda c: counts[c])
        counts[largest] -= 1
    return counts


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified random subset of ``size`` of ``labels``."""
    flat = labels.reshape(-1)
    classes = np.unique(flat)
    counts = stratified_counts([int((flat == c).sum()) for c in classes], size)
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(flat == c), size=n, replace=False)
        for c, n in zip(classes, counts, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def write_train_subset(source: Path, size: int, seed: int, target: Path) -> Path:
    """``target``: ``source`` with ``train_images``/``train_labels`` cut to a stratified subset."""
    with np.load(source) as data:
        arrays = {key: data[key] for key in data.files}
    keep = stratified_subset(arrays["train_labels"], size, seed)
    arrays["train_images"] = arrays["train_images"][keep]
    arrays["train_labels"] = arrays["train_labels"][keep]

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez_compressed(handle, **arrays)

    write_atomic(target, save)
    return target


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Test or validation AUC (macro one-vs-rest with 3+ classes) and accuracy."""
    metrics = classification_metrics(labels, probabilities)
    return {"auc": metrics["auc"], "accuracy": metrics["accuracy"]}


@dataclass(frozen=True)
class Selected:
    """A model trained round by round and kept at its best validation AUC."""

    weights: list[np.ndarray]
    best_round: int
    val_auc: float
    rounds: int
    seconds: float


def train_selected(
    trainer: Any,
    initial: list[np.ndarray],
    train: Split,
    val: Split | None,
    config: TrainConfig,
    rounds: int,
    seed: int,
) -> Selected:
    """``rounds`` calls of ``trainer.fit`` (one federated round's work each), keeping the
    round with the best validation AUC (the last round without a validation split)."""
    started = time.monotonic()
    weights, best = initial, (0, -math.inf, initial)
    for server_round in range(1, rounds + 1):
        weights = trainer.fit(weights, train, config, seed=seed + server_round).weights
        if val is None:
            best = (server_round, math.nan, weights)
            continue
        trainer.model.set_weights(weights)
        auc = score(trainer.predict(val.images), val.labels)["auc"]
        if math.isfinite(auc) and auc > best[1]:
            best = (server_round, auc, weights)
    return Selected(best[2], best[0], best[1], rounds, time.monotonic() - started)


def baselines(
    config: AppConfig,
    hospitals: int,
    pooled_rounds: int,
    on_result: Callable[[str, dict[str, Any]], None],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(a) pooled and (b) local-only, in this process with one ``LocalTrainer``; scores on
    the test split of the pooled data."""
    import keras

    from client.training import LocalTrainer
    from common.data.site import load_site
    from common.models import build_model
    from simulations.hospitals import simulated_hospital

    data, train = config.data, config.train
    spec = data.spec()
    pooled_site = load_site(
        Path(data.data_path), spec, "pooled", data.holdout_fraction, config.seed, data.val_fraction
    )
    keras.utils.set_random_seed(config.seed)  # the ServerApp's initial weights
    initial = build_model(config.model, spec).get_weights()
    trainer = LocalTrainer(build_model(config.model, spec))
    local_config = train.model_copy(update={"proximal_mu": 0.0})
    pooled_config = local_config.model_copy(update={"local_steps": 0, "local_epochs": 1})
    test = pooled_site.test

    def tested(selected: Selected) -> dict[str, Any]:
        trainer.model.set_weights(selected.weights)
        return {
            **score(trainer.predict(test.images), test.labels),
            "val_auc": selected.val_auc,
            "best_round": selected.best_round,
            "rounds": selected.rounds,
            "seconds": selected.seconds,
        }

    pooled = tested(
        train_selected(
            trainer,
            initial,
            pooled_site.train,
            pooled_site.val,
            pooled_config,
            pooled_rounds,
            config.seed,
        )
    )
    pooled["train_examples"] = len(pooled_site.train)
    on_result("pooled", pooled)
    local = []
    for hospital in range(hospitals):
        site = simulated_hospital(data, config.seed, hospital, hospitals)
        selected = train_selected(
            trainer,
            initial,
            site.train,
            site.val,
            local_config,
            config.federation.num_server_rounds,
            config.seed + 1000 * hospital,
        )
        result = {
            "hospital": site.name,
            "train_class_counts": site.class_counts(site.train),
            **tested(selected),
        }
        on_result(f"local-only {site.name}", result)
        local.append(result)
    return pooled, local

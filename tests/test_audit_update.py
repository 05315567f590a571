"""The coordinator's view of one hospital (simulations/audit/update_attack.py).

A tiny fabricated run: two simulated hospitals on a MedMNIST-style file of random images
with random labels (nothing to learn but the examples themselves), a fresh `cnn-small` as
its global model. One more round of hospital 0, through its own ClientApp, must lower its
training images' loss more than that of images no hospital trained on, and leave the run
directory byte for byte as it was.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_accounting import dp_event, rdp

from client.ledger import FileStore, LedgerEntry, data_fingerprint, empty_document, with_entry
from common.config import AppConfig, parse_app_config
from common.errors import FedclinicError
from common.models import build_model
from common.privacy import local_steps, record_event
from simulations.audit.candidates import Candidates
from simulations.audit.mia_math import roc_auc
from simulations.audit.update_attack import update_scores
from simulations.hospitals import simulated_hospital
from tests.factories import run_config

TRAIN_IMAGES, TEST_IMAGES, HOSPITALS = 80, 40, 2
LAST_ROUND = 3
BATCH = 8
SETTINGS: dict[str, Any] = {
    "model": "cnn-small",
    "dataset": "medmnist",
    "partitioner": "iid",
    "val_fraction": 0.0,
    "local_epochs": 5,
    "batch_size": BATCH,
    "learning_rate": 0.003,
}


def write_data(path: Path) -> Path:
    rng = np.random.default_rng(7)
    count = TRAIN_IMAGES + TEST_IMAGES
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 2, size=(count, 1))
    np.savez(
        path,
        train_images=images[:TRAIN_IMAGES],
        train_labels=labels[:TRAIN_IMAGES],
        test_images=images[TRAIN_IMAGES:],
        test_labels=labels[TRAIN_IMAGES:],
    )
    return path


def make_run(tmp_path: Path, **overrides: Any) -> tuple[Path, AppConfig]:
    """A finished run directory: config.json, metrics.json (rounds 1-3), model.keras."""
    import keras

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = write_data(tmp_path / "data.npz")
    values = run_config(**{**SETTINGS, **overrides}, data_path=str(data), run_dir=str(run_dir))
    (run_dir / "config.json").write_text(json.dumps(values), encoding="utf-8")
    rounds = [{"round": r} for r in range(1, LAST_ROUND + 1)]
    metrics = {"rounds": rounds, "outcome": {"status": "completed"}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    config = parse_app_config(values)
    keras.utils.set_random_seed(0)
    build_model(config.model, config.data.spec()).save(run_dir / "model.keras")
    return run_dir, config


def make_candidates(config: AppConfig) -> Candidates:
    """Both hospitals' training images (members) and their held-out images (non-members)."""
    sites = [simulated_hospital(config.data, config.seed, p, HOSPITALS) for p in range(HOSPITALS)]
    splits = [site.train for site in sites] + [site.test for site in sites]
    owners = [p for p in range(HOSPITALS)] + [-1] * HOSPITALS
    hospital = np.concatenate(
        [
            np.full(len(split), owner, dtype=np.int64)
            for split, owner in zip(splits, owners, strict=True)
        ]
    )
    return Candidates(
        images=np.concatenate([split.images for split in splits]),
        labels=np.concatenate([split.labels for split in splits]).astype(np.int64),
        is_member=hospital >= 0,
        hospital=hospital,
        hospital_names=tuple(f"hospital-{p}" for p in range(HOSPITALS)),
        source_index=np.arange(hospital.size, dtype=np.int64),
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def chance_band(members: int, non_members: int, z: float = 4.0) -> float:
    """z standard deviations of the AUC of ``members`` vs ``non_members`` scores under no
    signal (Mann-Whitney: var = (m + n + 1) / (12 m n))."""
    return z * math.sqrt((members + non_members + 1) / (12 * members * non_members))


def oracle_epsilon(noise: float, q: float, steps: int, delta: float) -> float:
    accountant = rdp.RdpAccountant()
    event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(noise))
    accountant.compose(dp_event.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))


def test_the_update_separates_its_hospitals_images_and_leaves_the_run_as_it_was(
    tmp_path: Path,
) -> None:
    run_dir, config = make_run(tmp_path)
    candidates = make_candidates(config)
    before = snapshot(run_dir)

    attack = update_scores(run_dir, candidates, 0, seed=0)

    own, other, outside = (candidates.hospital == p for p in (0, 1, -1))
    trained = roc_auc(attack.scores[own | outside], own[own | outside])
    untrained = roc_auc(attack.scores[other | outside], other[other | outside])
    assert trained > 0.5 + chance_band(int(own.sum()), int(outside.sum()))
    assert abs(untrained - 0.5) < chance_band(int(other.sum()), int(outside.sum()))
    assert attack.scores.shape == (len(candidates.labels),)
    assert (attack.hospital, attack.round, attack.epsilon) == (0, LAST_ROUND + 1, None)
    assert attack.returned_auc is not None
    assert 0.0 <= attack.returned_auc <= 1.0
    assert snapshot(run_dir) == before


def test_under_record_dp_the_round_runs_at_the_runs_noise_on_a_copy_of_the_ledger(
    tmp_path: Path,
) -> None:
    noise, delta, epochs = 1.0, 1e-5, 1
    one_round_events = (TRAIN_IMAGES // HOSPITALS // BATCH) * epochs
    q = BATCH / (TRAIN_IMAGES // HOSPITALS)
    one_round = oracle_epsilon(noise, q, one_round_events, delta)
    run_dir, config = make_run(
        tmp_path,
        dp="record",
        dp_noise_multiplier=noise,
        dp_delta=delta,
        dp_epsilon=1.01 * one_round,  # the ledger's round fits, the audit's would not
        local_epochs=epochs,
    )
    train = simulated_hospital(config.data, config.seed, 0, HOSPITALS).train
    steps = local_steps(len(train), BATCH, epochs)
    entry = LedgerEntry(population=len(train))
    entry.add(record_event(noise, BATCH, len(train)), steps)
    ledger = run_dir / "privacy-ledgers" / "hospital-0.json"
    FileStore(ledger).save(with_entry(empty_document(), data_fingerprint(train), entry))
    before = snapshot(run_dir)

    attack = update_scores(run_dir, make_candidates(config), 0)

    assert steps == one_round_events
    assert attack.epsilon == pytest.approx(oracle_epsilon(noise, q, 2 * steps, delta), rel=1e-9)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("dp", ["off", "hospital"])
def test_without_record_dp_no_epsilon_bounds_the_update(tmp_path: Path, dp: str) -> None:
    run_dir, config = make_run(tmp_path, dp=dp, local_epochs=1)

    attack = update_scores(run_dir, make_candidates(config), 1)

    assert (attack.hospital, attack.epsilon) == (1, None)
    assert np.isfinite(attack.scores).all()


def test_non_members_of_one_class_give_no_returned_auc(tmp_path: Path) -> None:
    run_dir, config = make_run(tmp_path, local_epochs=1)
    full = make_candidates(config)
    keep = full.is_member | (full.labels == 0)
    candidates = Candidates(
        images=full.images[keep],
        labels=full.labels[keep],
        is_member=full.is_member[keep],
        hospital=full.hospital[keep],
        hospital_names=full.hospital_names,
        source_index=full.source_index[keep],
    )

    attack = update_scores(run_dir, candidates, 0)

    assert attack.returned_auc is None


@pytest.mark.parametrize("hospital", [-1, 2])
def test_a_hospital_outside_the_run_is_refused_in_one_line(tmp_path: Path, hospital: int) -> None:
    run_dir, config = make_run(tmp_path)

    with pytest.raises(FedclinicError) as raised:
        update_scores(run_dir, make_candidates(config), hospital)

    assert str(raised.value) == (
        "Invalid value for `hospital`. Expected a partition id from 0 to 1 "
        f"(the run's hospitals). Received: {hospital}"
    )

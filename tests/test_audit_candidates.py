"""Which images the membership audit scores (simulations/audit/candidates.py).

Oracle: the images each trained hospital holds (``simulated_hospital``, as the run cut them)
and the raw arrays of the file, compared as sets of preprocessed image bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.config import parse_app_config
from common.errors import FedclinicError
from simulations.audit.candidates import Candidates, load_candidates
from simulations.hospitals import simulated_hospital
from tests.audit_factories import audit_settings, write_run, write_tiny_npz

SPLITS = ("train", "val", "test")


def file_images(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every split of the .npz, preprocessed by hand: uint8 / 255, (N, H, W, 1); and each
    image's split name."""
    with np.load(path) as archive:
        images = np.concatenate([archive[f"{s}_images"] for s in SPLITS])
        labels = np.concatenate([archive[f"{s}_labels"].reshape(-1) for s in SPLITS])
        names = np.concatenate([np.full(len(archive[f"{s}_labels"]), s) for s in SPLITS])
    return (images.astype(np.float32) / 255.0)[..., np.newaxis], labels, names


def trained_images(
    values: dict[str, object], hospitals: int, trained: tuple[int, ...]
) -> dict[bytes, int]:
    config = parse_app_config(values)
    owner: dict[bytes, int] = {}
    for p in sorted(trained):
        site = simulated_hospital(config.data, config.seed, p, hospitals, config.adversary)
        for image in site.train.images:
            owner.setdefault(image.tobytes(), p)
    return owner


def check_candidates(
    found: Candidates,
    data: Path,
    owner: dict[bytes, int],
    splits: tuple[str, ...] = ("train", "val"),
) -> None:
    """Members: exactly ``owner``'s images; non-members: every other image of ``splits``."""
    images, labels, names = file_images(data)
    everything = set(owner) | {
        image.tobytes() for image, name in zip(images, names, strict=True) if name in splits
    }
    keys = [image.tobytes() for image in found.images]
    assert len(keys) == len(set(keys)) == len(everything)
    assert {k for k, m in zip(keys, found.is_member, strict=True) if m} == set(owner)
    assert {k for k, m in zip(keys, found.is_member, strict=True) if not m} == everything - set(
        owner
    )
    assert [owner.get(k, -1) for k in keys] == found.hospital.tolist()
    np.testing.assert_array_equal(found.images, images[found.source_index])
    np.testing.assert_array_equal(found.labels, labels[found.source_index])


@pytest.mark.parametrize(
    ("hospitals", "trained"), [(3, (0, 1)), (3, (0, 1, 2)), (2, (1,)), (4, (0, 3))]
)
def test_members_are_the_trained_hospitals_training_images(
    tmp_path: Path, hospitals: int, trained: tuple[int, ...]
) -> None:
    # Prepare
    data = write_tiny_npz(tmp_path / "data.npz")
    values = audit_settings(data)
    run_dir = write_run(tmp_path / "run", values, hospitals=hospitals, trained=trained)
    # Execute
    found = load_candidates(run_dir, data)
    # Assert
    check_candidates(found, data, trained_images(values, hospitals, trained))
    assert found.hospital_names == tuple(f"hospital-{p}" for p in range(hospitals))


def test_a_member_repeated_in_the_test_split_is_one_member(tmp_path: Path) -> None:
    # Prepare: train[5] is repeated as test[0] (write_tiny_npz); all three hospitals train
    data = write_tiny_npz(tmp_path / "data.npz")
    run_dir = write_run(tmp_path / "run", audit_settings(data), trained=(0, 1, 2))
    # Execute
    found = load_candidates(run_dir, data, non_member_splits=SPLITS)
    # Assert
    row = int(np.flatnonzero(found.source_index == 5)[0])
    copies = [i for i, image in enumerate(found.images) if np.array_equal(image, found.images[row])]
    assert copies == [row]
    assert found.is_member[row]
    assert len(found) == 60 + 10 + 20 - 2  # two repeated images counted once


@pytest.mark.parametrize(
    "splits", [("train", "val"), ("val",), ("train", "val", "test"), ("test",)]
)
def test_non_members_come_only_from_the_chosen_splits(
    tmp_path: Path, splits: tuple[str, ...]
) -> None:
    # Prepare: hospitals 0 and 1 of 3 train, so hospital 2's training images are unseen
    data = write_tiny_npz(tmp_path / "data.npz")
    values = audit_settings(data)
    run_dir = write_run(tmp_path / "run", values, hospitals=3, trained=(0, 1))
    # Execute
    found = load_candidates(run_dir, data, non_member_splits=splits)
    # Assert
    check_candidates(found, data, trained_images(values, 3, (0, 1)), splits)


@pytest.mark.parametrize(
    ("splits", "received"), [((), "''"), (("train", "holdout"), "'train,holdout'")]
)
def test_unknown_non_member_splits_are_refused_in_one_line(
    tmp_path: Path, splits: tuple[str, ...], received: str
) -> None:
    # Prepare
    data = write_tiny_npz(tmp_path / "data.npz")
    run_dir = write_run(tmp_path / "run", audit_settings(data), trained=(0, 1))
    # Execute / Assert
    with pytest.raises(FedclinicError) as error:
        load_candidates(run_dir, data, non_member_splits=splits)
    assert str(error.value) == (
        "Invalid value for `--non-member-splits`. Expected comma-separated split names from "
        f"train, val, test. Received: {received}"
    )


def test_a_run_on_a_subset_file_gets_the_rest_of_the_full_file_as_non_members(
    tmp_path: Path,
) -> None:
    # Prepare: the run trained on the first 30 training images of the full file
    full = write_tiny_npz(tmp_path / "full.npz")
    with np.load(full) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["train_images"], arrays["train_labels"] = (
        arrays["train_images"][:30],
        arrays["train_labels"][:30],
    )
    subset = tmp_path / "subset.npz"
    np.savez(subset, **arrays)
    values = audit_settings(subset)
    run_dir = write_run(tmp_path / "run", values, hospitals=2, trained=(0, 1))
    # Execute
    found = load_candidates(run_dir, full)
    # Assert
    check_candidates(found, full, trained_images(values, 2, (0, 1)))
    assert int(found.is_member.sum()) == 30


def test_hospital_count_comes_from_hospitals_when_given(tmp_path: Path) -> None:
    # Prepare: metrics.json names hospital-0 and hospital-1 only; the run had 4
    data = write_tiny_npz(tmp_path / "data.npz")
    values = audit_settings(data)
    run_dir = write_run(tmp_path / "run", values, hospitals=2, trained=(0, 1))
    # Execute
    found = load_candidates(run_dir, data, hospitals=4)
    # Assert
    check_candidates(found, data, trained_images(values, 4, (0, 1)))
    assert len(found.hospital_names) == 4


def _missing_dir(tmp_path: Path, data: Path) -> Path:
    return tmp_path / "nowhere"


def _no_config(tmp_path: Path, data: Path) -> Path:
    run_dir = write_run(tmp_path / "run", audit_settings(data))
    (run_dir / "config.json").unlink()
    return run_dir


def _bad_metrics(tmp_path: Path, data: Path) -> Path:
    run_dir = write_run(tmp_path / "run", audit_settings(data))
    (run_dir / "metrics.json").write_text("[]", encoding="utf-8")
    return run_dir


def _synthetic(tmp_path: Path, data: Path) -> Path:
    return write_run(tmp_path / "run", audit_settings(data, dataset="synthetic", image_size=28))


def _shifted(tmp_path: Path, data: Path) -> Path:
    return write_run(tmp_path / "run", audit_settings(data, shift_strength=1.0))


def _other_file(tmp_path: Path, data: Path) -> Path:
    other = write_tiny_npz(tmp_path / "other.npz", seed=1)
    return write_run(tmp_path / "run", audit_settings(other), hospitals=2, trained=(0, 1))


@pytest.mark.parametrize(
    ("make", "hospitals", "message"),
    [
        (_missing_dir, None, "Run directory not found: {tmp}/nowhere"),
        (_no_config, None, "Not a finished run directory: {tmp}/run/config.json not found"),
        (
            _bad_metrics,
            None,
            "Invalid content in {tmp}/run/metrics.json. Expected a JSON object with a `rounds` "
            "list. Received: list",
        ),
        (
            _synthetic,
            None,
            "Cannot audit {tmp}/run: its hospitals generated synthetic data, so no image is "
            "known not to be trained on. Audit a run on a MedMNIST .npz or an image folder.",
        ),
        (
            _shifted,
            None,
            "Cannot audit {tmp}/run: `shift-strength` > 0 changed each hospital's images, so "
            "they are not the images of --data.",
        ),
        (
            _other_file,
            None,
            "60 training images of the run in {tmp}/run are not in {tmp}/data.npz: audit with "
            "the data file the run trained on (or a file that contains it).",
        ),
        (
            lambda tmp, data: write_run(tmp / "run", audit_settings(data)),
            2,
            "Invalid value for `--hospitals`. Expected an integer > 2 (metrics.json names "
            "hospital-2). Received: 2",
        ),
    ],
)
def test_a_run_that_cannot_be_audited_is_one_clear_line(
    tmp_path: Path, make: object, hospitals: int | None, message: str
) -> None:
    # Prepare
    data = write_tiny_npz(tmp_path / "data.npz")
    run_dir = make(tmp_path, data)  # type: ignore[operator]
    # Execute
    with pytest.raises(FedclinicError) as caught:
        load_candidates(run_dir, data, hospitals=hospitals)
    # Assert
    assert str(caught.value) == message.format(tmp=tmp_path)
    assert "\n" not in str(caught.value)


def test_config_json_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    # Prepare
    data = write_tiny_npz(tmp_path / "data.npz")
    run_dir = write_run(tmp_path / "run", audit_settings(data))
    (run_dir / "config.json").write_text("{", encoding="utf-8")
    # Execute
    with pytest.raises(FedclinicError) as caught:
        load_candidates(run_dir, data)
    # Assert
    assert str(caught.value).startswith(f"Invalid JSON in {run_dir / 'config.json'}: ")
    assert json.dumps(str(caught.value)).count("\\n") == 0

"""The images a membership attack scores: the run's training images and the ones it never saw.

Members are the training images of every simulated hospital that trained (a train reply
with status ``ok`` in ``metrics.json``), rebuilt exactly as the run cut them
(:func:`simulations.hospitals.simulated_hospital` with the run's ``config.json``). Non-members
are the other images of ``--data``'s ``non_member_splits`` (default ``train`` and ``val``:
a ``test`` split may be drawn from another population — PneumoniaMNIST's is, and alone it
gives a loss attack AUC 0.58 on an update that leaks nothing — which an attack would score as
membership). An image's identity is a hash of its
preprocessed bytes, so an image listed twice counts once, an image both trained on and in a
held-out split is a member, and a run trained on a subset of a file, audited with the whole
file, gets the rest of the file as non-members.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.config import AppConfig, parse_app_config
from common.data.schema import SPLIT_NAMES, Split
from common.data.site import load_splits
from common.errors import ConfigError, FedclinicError, invalid_value
from common.manifest import declared_defaults, project_root, with_overrides

_HOSPITAL = re.compile(r"hospital-(\d+)")
DEFAULT_NON_MEMBER_SPLITS: tuple[str, ...] = ("train", "val")


@dataclass(frozen=True)
class Candidates:
    images: np.ndarray  # (N, H, W, C) float32, preprocessed exactly as the hospitals' inputs
    labels: np.ndarray  # (N,) int64 (a member: the label its hospital trained with)
    is_member: np.ndarray  # (N,) bool: some hospital of the run trained on it
    hospital: np.ndarray  # (N,) int64: partition id of the hospital that trained on it, -1 if none
    hospital_names: tuple[str, ...]  # partition id -> name ("hospital-3")
    source_index: np.ndarray  # (N,) int64: row in the pooled (train, val, test) arrays of --data

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class AuditedRun:
    """What the audit needs of a finished run directory."""

    path: Path
    values: dict[str, Any]  # config.json merged onto the declared defaults
    config: AppConfig
    rounds: list[dict[str, Any]]  # metrics.json's rounds


def read_run(run_dir: Path) -> AuditedRun:
    """The run's config and rounds; one clear line when the directory cannot be audited."""
    from server.run_dir import CONFIG_FILE, METRICS_FILE

    if not run_dir.is_dir():
        raise FedclinicError(f"Run directory not found: {run_dir}")
    stored = _json_object(run_dir / CONFIG_FILE, needs_rounds=False)
    metrics = _json_object(run_dir / METRICS_FILE, needs_rounds=True)
    values = with_overrides(declared_defaults(project_root() / "pyproject.toml"), stored)
    config = parse_app_config(values)
    if config.data.dataset == "synthetic":
        raise FedclinicError(
            f"Cannot audit {run_dir}: its hospitals generated synthetic data, so no image is "
            "known not to be trained on. Audit a run on a MedMNIST .npz or an image folder."
        )
    return AuditedRun(run_dir, values, config, list(metrics["rounds"]))


def _json_object(path: Path, *, needs_rounds: bool) -> dict[str, Any]:
    from server.report_cli import check_run_file

    if not path.is_file():
        raise FedclinicError(f"Not a finished run directory: {path} not found")
    check_run_file(path, needs_rounds)
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def trained_hospitals(rounds: list[dict[str, Any]]) -> dict[int, str]:
    """Partition id -> name of every ``hospital-N`` with at least one ``ok`` train reply."""
    trained: dict[int, str] = {}
    for record in rounds:
        for outcome in (record.get("nodes") or {}).get("train", {}).values():
            match = _HOSPITAL.fullmatch(str(outcome.get("name", "")))
            if match and outcome.get("status") == "ok":
                trained[int(match.group(1))] = match.group(0)
    return dict(sorted(trained.items()))


def hospital_count(rounds: list[dict[str, Any]], hospitals: int | None) -> int:
    """``hospitals`` (``--hospitals``) or one more than the largest ``hospital-N`` recorded."""
    seen = [
        int(match.group(1))
        for record in rounds
        for phase in (record.get("nodes") or {}).values()
        for outcome in phase.values()
        if (match := _HOSPITAL.fullmatch(str(outcome.get("name", ""))))
    ]
    if hospitals is None:
        if not seen:
            raise FedclinicError(
                "metrics.json names no simulated hospital (`hospital-N`); give `--hospitals`"
            )
        return max(seen) + 1
    if hospitals < 1:
        raise ConfigError(invalid_value("--hospitals", "an integer ≥ 1", hospitals))
    if seen and hospitals <= max(seen):
        expected = f"an integer > {max(seen)} (metrics.json names hospital-{max(seen)})"
        raise ConfigError(invalid_value("--hospitals", expected, hospitals))
    return hospitals


def image_keys(images: np.ndarray) -> list[bytes]:
    """One hash per preprocessed image: its identity in the audit."""
    return [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images]


def pooled_splits(data: Path, run: AuditedRun) -> tuple[Split, np.ndarray]:
    """Every split of ``data`` (train, val, test in that order), preprocessed for the run,
    and each row's split name."""
    splits = load_splits(data, run.config.data.spec(), str(data))
    present = [name for name in SPLIT_NAMES if name in splits]
    pooled = Split(
        np.concatenate([splits[name].images for name in present]),
        np.concatenate([splits[name].labels for name in present]),
    )
    return pooled, np.concatenate([np.full(len(splits[name]), name) for name in present])


def checked_splits(names: tuple[str, ...]) -> tuple[str, ...]:
    """``--non-member-splits``: a non-empty selection of split names."""
    if not names or any(name not in SPLIT_NAMES for name in names):
        expected = f"comma-separated split names from {', '.join(SPLIT_NAMES)}"
        raise ConfigError(invalid_value("--non-member-splits", expected, ",".join(names)))
    return names


def load_candidates(
    run_dir: Path,
    data: Path,
    *,
    hospitals: int | None = None,
    non_member_splits: tuple[str, ...] = DEFAULT_NON_MEMBER_SPLITS,
) -> Candidates:
    """Members and non-members of the run in ``run_dir`` among the images of ``data``."""
    return candidates_of(
        read_run(run_dir), data, hospitals=hospitals, non_member_splits=non_member_splits
    )


def candidates_of(
    run: AuditedRun,
    data: Path,
    *,
    hospitals: int | None = None,
    non_member_splits: tuple[str, ...] = DEFAULT_NON_MEMBER_SPLITS,
) -> Candidates:
    from simulations.hospitals import hospital_name, simulated_hospital

    checked_splits(non_member_splits)

    if run.config.data.shift_strength > 0.0:
        raise FedclinicError(
            f"Cannot audit {run.path}: `shift-strength` > 0 changed each hospital's images, "
            "so they are not the images of --data."
        )
    count = hospital_count(run.rounds, hospitals)
    pooled, split_of = pooled_splits(data, run)
    first_row: dict[bytes, int] = {}
    for row, key in enumerate(image_keys(pooled.images)):
        first_row.setdefault(key, row)
    owner: dict[int, tuple[int, int]] = {}  # source row -> (hospital, trained label)
    missing = 0
    for partition in trained_hospitals(run.rounds):
        if partition >= count:
            continue
        site = simulated_hospital(
            run.config.data, run.config.seed, partition, count, run.config.adversary
        )
        for key, label in zip(image_keys(site.train.images), site.train.labels, strict=True):
            if key in first_row:
                owner.setdefault(first_row[key], (partition, int(label)))
            else:
                missing += 1
    if missing:
        raise FedclinicError(
            f"{missing} training images of the run in {run.path} are not in {data}: audit with "
            "the data file the run trained on (or a file that contains it)."
        )
    rows = np.array(
        [
            row
            for row in sorted(first_row.values())
            if row in owner or split_of[row] in non_member_splits
        ],
        dtype=np.int64,
    )
    hospital = np.array([owner.get(int(r), (-1, 0))[0] for r in rows], dtype=np.int64)
    labels = pooled.labels[rows].copy()
    for i, r in enumerate(rows):
        if int(r) in owner:
            labels[i] = owner[int(r)][1]
    return Candidates(
        images=pooled.images[rows],
        labels=labels.astype(np.int64),
        is_member=hospital >= 0,
        hospital=hospital,
        hospital_names=tuple(hospital_name(p) for p in range(count)),
        source_index=rows,
    )

"""Shadow federations for offline LiRA: the run's own recipe, trained on halves of the candidates.

Shadow ``k`` trains on the candidates that :func:`mia_math.shadow_assignment` puts IN it:
a whole federation simulated on this machine with the run's ``config.json`` values, only
``data-path`` (a temporary ``.npz`` holding those candidates as its train split and the
``val``/``test`` splits of ``--data``), ``run-dir`` (temporary), ``seed`` (one per shadow)
and ``resume`` (false) changed. Each federation runs in a child process
(``python -m simulations``, as a sweep runs them), so Ray and TensorFlow state never pile
up here; its ``model.keras`` then scores every candidate.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import FedclinicError
from simulations.audit.candidates import AuditedRun, Candidates


@dataclass(frozen=True)
class ShadowJob:
    """One shadow federation to train."""

    run: AuditedRun
    candidates: Candidates
    data: Path  # --data: its val and test splits are the shadow's
    train: np.ndarray  # (N,) bool: the candidates this shadow trains on
    hospitals: int
    seed: int  # the shadow federation's run seed
    index: int  # 0 .. K-1


# A trainer returns the shadow model's class probabilities (N, C) on every candidate.
ShadowTrainer = Callable[[ShadowJob], np.ndarray]


def shadow_seed(run_seed: int, audit_seed: int, shadows: int, index: int) -> int:
    """A run seed for shadow ``index``, distinct from the run's and from every other shadow's."""
    return run_seed + 1 + audit_seed * shadows + index


def predict_probabilities(model: Any, images: np.ndarray) -> np.ndarray:
    """Class probabilities of a Keras model, float64."""
    # eager calls: `predict` traces a new function per model, and TensorFlow warns about
    # the retracing after a few shadows
    batches = [
        np.asarray(model(images[i : i + 256], training=False)) for i in range(0, len(images), 256)
    ]
    return np.concatenate(batches).astype(np.float64)


def load_model_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    """Class probabilities of the saved model at ``path`` on ``images``."""
    from common.quiet import import_keras

    if not path.is_file():
        raise FedclinicError(f"Not a finished run directory: {path} not found")
    keras = import_keras()
    return predict_probabilities(keras.models.load_model(path, compile=False), images)


def shadow_data(job: ShadowJob, target: Path) -> Path:
    """Write the shadow's ``.npz``: its candidates as ``train``, ``--data``'s val/test."""
    from common.data.site import load_splits
    from common.files import write_atomic

    splits = load_splits(job.data, job.run.config.data.spec(), str(job.data))
    arrays = {
        "train_images": job.candidates.images[job.train],
        "train_labels": job.candidates.labels[job.train],
    }
    for name in ("val", "test"):
        if name in splits:
            arrays[f"{name}_images"] = splits[name].images
            arrays[f"{name}_labels"] = splits[name].labels

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    write_atomic(target, save)
    return target


def shadow_overrides(job: ShadowJob, data: Path, run_dir: Path) -> dict[str, Any]:
    """The run's config values, with only what makes this a shadow changed."""
    return {
        **job.run.values,
        "dataset": "medmnist",  # the shadow's data is an .npz even when the run's was a folder
        "data-path": str(data),
        "run-dir": str(run_dir),
        "seed": job.seed,
        "resume": False,
    }


def train_shadow_federation(job: ShadowJob) -> np.ndarray:
    """The real trainer: simulate the shadow federation in a child process, then score."""
    from simulations.sweep_file import PlannedRun
    from simulations.sweep_runs import LOG_FILE, simulation_child

    work = Path(tempfile.mkdtemp(prefix=f"fedclinic-shadow-{job.index}-"))
    run_dir = work / "run"
    run_dir.mkdir()
    data = shadow_data(job, work / "shadow.npz")
    planned = PlannedRun(cell=(), seed=job.seed, overrides=shadow_overrides(job, data, run_dir))
    code = simulation_child(job.hospitals, 1.0)(planned, run_dir)
    if code != 0:
        raise FedclinicError(
            f"Shadow federation {job.index + 1} failed (exit code {code}); its log: "
            f"{run_dir / LOG_FILE}"
        )
    probabilities = load_model_probabilities(run_dir / "model.keras", job.candidates.images)
    shutil.rmtree(work, ignore_errors=True)
    return probabilities


def shadow_confidences(
    run: AuditedRun,
    candidates: Candidates,
    data: Path,
    assignment: np.ndarray,
    hospitals: int,
    *,
    seed: int,
    train_shadow: ShadowTrainer,
    say: Callable[[str], None] = lambda _: None,
) -> np.ndarray:
    """φ (:func:`mia_math.logit_confidence`) of every candidate under each shadow: (K, N)."""
    from simulations.audit.mia_math import logit_confidence

    shadows = int(assignment.shape[0])
    phis = np.empty((shadows, len(candidates)), dtype=np.float64)
    for index in range(shadows):
        say(f"shadow federation {index + 1}/{shadows}")
        job = ShadowJob(
            run=run,
            candidates=candidates,
            data=data,
            train=assignment[index],
            hospitals=hospitals,
            seed=shadow_seed(run.config.seed, seed, shadows, index),
            index=index,
        )
        phis[index] = logit_confidence(train_shadow(job), candidates.labels)
    return phis

"""``audit_membership``: membership inference against a finished run, as a library call.

Targets: the run's global model (``model.keras``), attacked with the loss threshold and, with
``shadow_models`` K > 0, offline LiRA on K shadow federations (overall and per member
hospital: that hospital's members against all non-members); and one hospital's update of one
more round, as the coordinator sees it (:mod:`simulations.audit.update_attack`; that
hospital's members against all non-members). Every attack's scores are calibrated per class
against the non-members (:func:`calibrated`), so that a hospital's class mix does not pass
for membership. Each row carries the attack's AUC and TPR at
the reported FPRs with bootstrap intervals, the attacked model's test AUC, the DP bound
(ε, δ) that applies (:mod:`simulations.audit.bounds`) and every violation of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from common.errors import ConfigError, FedclinicError, invalid_value
from simulations.audit.bounds import run_privacy
from simulations.audit.candidates import (
    DEFAULT_NON_MEMBER_SPLITS,
    AuditedRun,
    Candidates,
    candidates_of,
    read_run,
)
from simulations.audit.rows import (
    AuditResult,
    Figures,
    global_rows,
    member_hospitals,
    update_row,
)
from simulations.audit.shadows import ShadowTrainer, predict_probabilities, shadow_confidences

if TYPE_CHECKING:
    from simulations.audit.update_attack import UpdateAttack

MIN_SHADOWS = 8
MIN_BOOTSTRAP = 100
JSON_FILE = "audit-membership.json"
PLOT_FILE = "audit-roc.png"


class UpdateScorer(Protocol):
    def __call__(
        self, run_dir: Path, candidates: Candidates, hospital: int, *, seed: int = 0
    ) -> UpdateAttack: ...


def option_problem(shadow_models: int, bootstrap: int, hospitals: int | None, seed: int) -> str:
    """The first invalid option as one line ("" when all are valid)."""
    if shadow_models != 0 and (shadow_models < MIN_SHADOWS or shadow_models % 2):
        expected = f"0 (loss attack only) or an even integer ≥ {MIN_SHADOWS}"
        return invalid_value("--shadow-models", expected, shadow_models)
    if bootstrap < MIN_BOOTSTRAP:
        return invalid_value("--bootstrap", f"an integer ≥ {MIN_BOOTSTRAP}", bootstrap)
    if hospitals is not None and hospitals < 1:
        return invalid_value("--hospitals", "an integer ≥ 1", hospitals)
    if seed < 0:
        return invalid_value("--seed", "an integer ≥ 0", seed)
    return ""


def audit_membership(
    run_dir: Path,
    data: Path,
    *,
    shadow_models: int = 8,
    hospitals: int | None = None,
    non_member_splits: tuple[str, ...] = DEFAULT_NON_MEMBER_SPLITS,
    update_hospital: str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    train_shadow: ShadowTrainer | None = None,
    update_scores: UpdateScorer | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> AuditResult:
    """Attack the run in ``run_dir`` with the images of ``data``; see the module doc."""
    problem = option_problem(shadow_models, bootstrap, hospitals, seed)
    if problem:
        raise ConfigError(problem)
    run = read_run(run_dir)
    if not data.exists():
        raise FedclinicError(f"Data not found: {data}")
    candidates = candidates_of(run, data, hospitals=hospitals, non_member_splits=non_member_splits)
    if candidates.is_member.all() or not candidates.is_member.any():
        kind = "non-member" if candidates.is_member.all() else "member"
        raise FedclinicError(f"No {kind} image among the {len(candidates)} images of {data}")
    chosen = update_target(candidates, update_hospital)
    privacy = run_privacy(run.config, run.rounds)
    probabilities, model_auc = target_model(run_dir / "model.keras", run, data, candidates)
    attacks = {"loss": calibrated(loss_scores(probabilities, candidates), candidates)}
    notes: list[str] = []
    if shadow_models:
        lira = lira_scores(
            run, candidates, data, probabilities, shadow_models, seed, train_shadow, say
        )
        attacks["lira"] = calibrated(lira, candidates)
    else:
        notes.append("LiRA skipped: --shadow-models 0 (loss attack only)")
    stats = Figures(bootstrap, seed)
    rows = global_rows(candidates, attacks, model_auc, privacy, stats)
    curves = {
        f"global model, {name}": stats.roc(scores, candidates.is_member)
        for name, scores in attacks.items()
    }
    if run.config.federation.secure_aggregation:
        notes.append(
            "secure aggregation was on: this run's coordinator saw only the masked sum; the "
            "update row shows what one hospital's update would have revealed without it"
        )
    say(f"update of {candidates.hospital_names[chosen]}: one more round")
    scorer = update_scores if update_scores is not None else _default_update_scores()
    update = scorer(run_dir, candidates, chosen, seed=seed)
    update = replace(update, scores=calibrated(update.scores, candidates))
    row, curve = update_row(candidates, chosen, update, privacy, stats)
    rows.append(row)
    curves[f"{row.hospital}'s update, loss change"] = curve
    return AuditResult(
        run_dir=run_dir,
        data=data,
        shadow_models=shadow_models,
        non_member_splits=non_member_splits,
        privacy=privacy,
        lowest_fpr=1.0 / int((~candidates.is_member).sum()),
        rows=tuple(rows),
        curves=curves,
        notes=tuple(notes),
    )


def loss_scores(probabilities: np.ndarray, candidates: Candidates) -> np.ndarray:
    """The loss-threshold attack: a lower loss means a member (higher score)."""
    from simulations.audit.mia_math import example_loss

    return -np.asarray(example_loss(probabilities, candidates.labels), dtype=np.float64)


def calibrated(scores: np.ndarray, candidates: Candidates) -> np.ndarray:
    """An attack's scores made label-aware: each one's quantile among the non-members of its
    class (:func:`simulations.audit.mia_math.class_calibrated`), so a hospital's class mix
    alone does not read as membership. LiRA needs it too: offline LiRA removes each
    candidate's own mean under the shadows, but the target model and the shadows still differ
    by class (measured: per-hospital LiRA AUC 0.37–0.40 for hospitals of 93–100 % pneumonia,
    0.81–0.84 for hospitals of 0–2 %, with no membership signal)."""
    from simulations.audit.mia_math import class_calibrated

    return class_calibrated(scores, candidates.labels, ~candidates.is_member)


def update_target(candidates: Candidates, name: str | None) -> int:
    """The partition id of ``--update-hospital`` (default: the one with the most members)."""
    members = member_hospitals(candidates)
    if name is None:
        counts = np.bincount(candidates.hospital[candidates.is_member])
        return int(np.argmax(counts))
    names = {candidates.hospital_names[p]: p for p in members}
    if name not in names:
        expected = "the name of a hospital that trained (" + ", ".join(names) + ")"
        raise ConfigError(invalid_value("--update-hospital", expected, name))
    return names[name]


def lira_scores(
    run: AuditedRun,
    candidates: Candidates,
    data: Path,
    probabilities: np.ndarray,
    shadow_models: int,
    seed: int,
    train_shadow: ShadowTrainer | None,
    say: Callable[[str], None],
) -> np.ndarray:
    """Offline LiRA scores of every candidate against the target's probabilities."""
    from simulations.audit.mia_math import lira_offline_scores, logit_confidence, shadow_assignment
    from simulations.audit.shadows import train_shadow_federation

    assignment = shadow_assignment(len(candidates), shadow_models, seed)
    hospitals = len(candidates.hospital_names)
    phis = shadow_confidences(
        run,
        candidates,
        data,
        assignment,
        hospitals,
        seed=seed,
        train_shadow=train_shadow or train_shadow_federation,
        say=say,
    )
    target = logit_confidence(probabilities, candidates.labels)
    return np.asarray(lira_offline_scores(target, phis, assignment), dtype=np.float64)


def target_model(
    path: Path, run: AuditedRun, data: Path, candidates: Candidates
) -> tuple[np.ndarray, float]:
    """The attacked model's probabilities on every candidate and its AUC on the test split
    of ``data`` (held out as the run would hold it out when the file has none)."""
    from common.data.site import load_site
    from common.metrics import auc
    from common.quiet import import_keras

    if not path.is_file():
        raise FedclinicError(f"Not a finished run directory: {path} not found")
    model = import_keras().models.load_model(path, compile=False)
    settings = run.config.data
    test = load_site(
        data,
        settings.spec(),
        str(data),
        settings.holdout_fraction,
        run.config.seed,
        settings.val_fraction,
    ).test
    value = float(auc(test.labels, predict_probabilities(model, test.images)))
    return predict_probabilities(model, candidates.images), value


def _default_update_scores() -> UpdateScorer:
    from simulations.audit.update_attack import update_scores

    return update_scores

"""Resume: continue a run from its newest readable checkpoint, or refuse in one line.

Nothing of the run is destroyed on the way: a refusal leaves ``metrics.json`` and every
checkpoint as they were; unreadable checkpoints newer than the one resumed from are moved
to ``checkpoints/unreadable/``; when the resumed history drops rounds that ``metrics.json``
lists (because their checkpoints were unreadable), the old file is kept as
``metrics.before-resume-<UTC time>.json``.
"""

from __future__ import annotations

from logging import INFO, WARNING

from flwr.app import ArrayRecord
from flwr.common import log
from flwr.serverapp.strategy import Strategy

from common.config import AppConfig
from common.errors import RunError
from server.checkpoint import (
    CHECKPOINT_DIR,
    check_fit,
    restore_rng_state,
    restore_strategy_state,
    scan_checkpoints,
    set_aside,
)
from server.privacy import restore_privacy_state
from server.run_dir import METRICS_FILE, RunDirectory
from server.selection import ModelSelection


def resume(
    run_dir: RunDirectory,
    config: AppConfig,
    strategy: Strategy,
    arrays: ArrayRecord,
    selection: ModelSelection | None = None,
) -> tuple[ArrayRecord, int]:
    """The global arrays and first round to run; restores strategy, DP accountant,
    best round (into ``selection``), history and RNG."""
    folder = run_dir.path / CHECKPOINT_DIR
    for stale in folder.glob(".round-*"):
        stale.unlink(missing_ok=True)  # temporaries of a write that was killed
    scan = scan_checkpoints(run_dir.path)
    if scan.newest is None and scan.unreadable:
        reasons = "; ".join(f"{path.name}: {why}" for path, why in scan.unreadable)
        raise RunError(
            f"Cannot resume the run in {run_dir.path}: none of its {len(scan.unreadable)} "
            f"checkpoints can be read ({reasons}). Nothing was changed; repair or remove "
            f"them, or start a new run with another `run-dir`."
        )
    if scan.newest is None:
        return start_without_checkpoint(run_dir, arrays)
    path, checkpoint = scan.newest
    check_fit(path, checkpoint, config, arrays)
    restore_strategy_state(strategy, checkpoint.strategy_state)
    restore_privacy_state(strategy, checkpoint.privacy, str(path))
    if selection is not None:
        selection.restore(checkpoint.best, checkpoint.best_arrays)
    restore_rng_state(checkpoint.rng)
    for unreadable, why in scan.unreadable:
        set_aside(unreadable, why)
    recorded = run_dir.recorded_rounds()
    if recorded is None or any(r > checkpoint.server_round for r in recorded):
        kept = run_dir.keep_metrics_copy()
        log(
            WARNING,
            "[fedclinic] %s lists rounds after round %d (or is unreadable); kept as %s",
            METRICS_FILE,
            checkpoint.server_round,
            kept,
        )
    run_dir.restore(checkpoint.rounds)
    log(INFO, "[fedclinic] resuming after round %d from %s", checkpoint.server_round, path)
    return checkpoint.arrays, checkpoint.server_round + 1


def start_without_checkpoint(run_dir: RunDirectory, arrays: ArrayRecord) -> tuple[ArrayRecord, int]:
    """Round 1 for a run that never checkpointed; refuse if ``metrics.json`` says otherwise."""
    recorded = run_dir.recorded_rounds()
    if recorded is None or recorded:
        listed = "cannot be read" if recorded is None else f"lists {len(recorded)} rounds"
        raise RunError(
            f"Cannot resume the run in {run_dir.path}: its {METRICS_FILE} {listed} but "
            f"{CHECKPOINT_DIR}/ holds no checkpoint to continue from. Nothing was "
            f"changed; start a new run with another `run-dir`."
        )
    log(INFO, "[fedclinic] resume: no checkpoint in %s; starting at round 1", run_dir.path)
    run_dir.restore([])
    return arrays, 1

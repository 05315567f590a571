"""The ServerApp a coordinator runs: rounds of federated training of one Keras model."""

from __future__ import annotations

from logging import ERROR, INFO
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from common.config import AppConfig, parse_app_config
from common.errors import ConfigError, FedclinicError, invalid_value
from common.quiet import import_keras
from server.adversaries import Adversary, AdversaryFactory, adversary_for, attackers_outcome
from server.central_eval import CentralEvaluator, load_central_split
from server.checkpoint import (
    Checkpoint,
    check_strategy_state,
    fit_of,
    list_checkpoints,
    rng_state,
    save_checkpoint,
    strategy_state,
)
from server.loop import run_federation
from server.privacy import privacy_state, with_hospital_dp
from server.resume import resume
from server.run_dir import LAST_MODEL_FILE, MODEL_FILE, RunDirectory, resolve_run_dir
from server.selection import ModelSelection
from server.strategies import build_strategy
from server.tensorboard import RoundScalars
from server.validation import ValidatingStrategy


def run(grid: Grid, context: Context) -> None:
    """Entry point: parse the run config once, then federate.

    A config or run error is logged as one line and raised, so Flower marks the run as
    failed (a ``sys.exit`` in the ServerApp thread of a simulation would be swallowed
    and the run reported as completed).
    """
    try:
        config = parse_app_config(dict(context.run_config))
    except FedclinicError as err:
        log(ERROR, "%s", err)
        raise
    federate(grid, config, dict(context.run_config), Path.cwd())


def federate(
    grid: Grid,
    config: AppConfig,
    resolved: dict[str, Any],
    cwd: Path,
    adversaries: AdversaryFactory | None = None,
) -> Path:
    """Run the federation; ``adversaries`` builds a simulation's attackers when ``attack``
    is set (None: the installed entry point, :mod:`server.adversaries`)."""
    fed = config.federation
    # a resumed run leaves metrics.json alone until its history is loaded (server/resume.py)
    run_dir = RunDirectory(
        resolve_run_dir(fed.run_dir, fed.strategy, cwd), owns_metrics=not fed.resume
    )
    if not fed.resume and list_checkpoints(run_dir.path):
        raise ConfigError(
            invalid_value(
                "run-dir",
                "a directory without checkpoints when `resume` is false "
                "(set `resume=true` to continue that run)",
                str(run_dir.path),
            )
        )
    run_dir.create()
    if not fed.resume:  # a resumed run's config.json changes only once resume accepts it
        run_dir.write_config(resolved)
    log(INFO, "[fedclinic] run directory: %s", run_dir.path)

    keras = import_keras()  # quietly, before anything else here imports TensorFlow
    from common.models import build_model

    keras.utils.set_random_seed(config.seed)
    model = build_model(config.model, config.data.spec())
    arrays, first_round = ArrayRecord(model.get_weights()), 1
    adversary: Adversary | None = None
    try:
        adversary = adversary_for(config, grid, adversaries)
        strategy = build_validating_strategy(config, adversary)
        fit = fit_of(config)
        check_strategy_state(strategy)  # before round 1: checkpoints must hold its state
        split = load_central_split(config)
        evaluator = (
            CentralEvaluator(build_model(config.model, config.data.spec()), split)
            if split is not None
            else None
        )
        selection = ModelSelection(patience=fed.early_stopping_patience)
        if fed.resume:  # after every model is built: restoring the RNG state comes last
            arrays, first_round = resume(run_dir, config, strategy, arrays, selection)
            run_dir.write_config(resolved)
        scalars = RoundScalars(run_dir.path)  # <run-dir>/tensorboard/, never fails a run

        def on_round_done(server_round: int, new: ArrayRecord, record: dict[str, Any]) -> None:
            checkpoint = Checkpoint(
                server_round=server_round,
                arrays=new,
                strategy_state=strategy_state(strategy),
                rounds=[*run_dir.rounds, record],
                rng=rng_state(),
                fit=fit,
                privacy=privacy_state(strategy),
                best=None if selection.best is None else selection.best.describe(),
                best_arrays=None if selection.best is None else selection.best.arrays,
            )
            save_checkpoint(run_dir.path, checkpoint, fed.checkpoints_keep)
            run_dir.add_round(record)
            scalars.write(record)

        final = run_federation(
            grid,
            strategy,
            arrays,
            config,
            first_round,
            on_round_done,
            evaluator,
            history=run_dir.rounds,
            selection=selection,
        )
    except Exception as err:
        message = str(err) if isinstance(err, FedclinicError) else f"{type(err).__name__}: {err}"
        log(ERROR, "[fedclinic] %s", message)
        if run_dir.owns_metrics:  # else the run failed before resuming: keep its files
            run_dir.finish("failed", message, attackers_outcome(adversary))
            write_report_logged(run_dir.path)
        raise
    saved = save_models(run_dir, model, final, selection)
    run_dir.finish(
        "completed",
        details={**selection_outcome(run_dir, config, selection), **attackers_outcome(adversary)},
    )
    write_report_logged(run_dir.path)
    log(INFO, "[fedclinic] final model: %s", saved)
    log(INFO, "[fedclinic] run directory: %s", run_dir.path)
    return run_dir.path


def save_models(
    run_dir: RunDirectory, model: Any, last: ArrayRecord, selection: ModelSelection
) -> Path:
    """``model-last.keras`` = the last round, ``model.keras`` = the best round by validation
    AUC (the last round when no round had one); each written atomically."""
    model.set_weights(last.to_numpy_ndarrays())
    run_dir.save_model(model, LAST_MODEL_FILE)
    best = last if selection.best is None else selection.best.arrays
    model.set_weights(best.to_numpy_ndarrays())
    return run_dir.save_model(model, MODEL_FILE)


def selection_outcome(
    run_dir: RunDirectory, config: AppConfig, selection: ModelSelection
) -> dict[str, Any]:
    """What ``metrics.json``'s outcome says of the chosen model and an early stop."""
    details: dict[str, Any] = {
        "best-round": None if selection.best is None else selection.best.describe()
    }
    last = run_dir.rounds[-1]["round"] if run_dir.rounds else None
    if last is not None and last < config.federation.num_server_rounds:
        details["stopped-early"] = selection.stop_reason(last)
    if selection.best is None:
        log(INFO, "[fedclinic] no round had a validation AUC: %s is the last round", MODEL_FILE)
    else:
        log(
            INFO,
            "[fedclinic] best round by validation AUC: %d (%.4f) -> %s; last round -> %s",
            selection.best.server_round,
            selection.best.auc,
            MODEL_FILE,
            LAST_MODEL_FILE,
        )
    return details


def build_validating_strategy(
    config: AppConfig, adversary: Adversary | None = None
) -> ValidatingStrategy:
    """The configured Flower strategy, under hospital-level DP when ``dp`` is 'hospital',
    under reply validation (after a simulation's ``adversary`` tampered with the replies)."""
    fed, privacy = config.federation, config.privacy
    strategy = build_strategy(config)
    hospital = privacy.dp == "hospital"
    if hospital:
        strategy = with_hospital_dp(strategy, config)
        log(
            INFO,
            "[fedclinic] hospital-level DP: every round trains exactly %d hospitals "
            "(`min-train-nodes`), noise multiplier %.4g, clip norm %g, target ε %g at δ %g",
            fed.min_train_nodes,
            strategy.strategy.noise_multiplier,
            privacy.dp_clip_norm,
            privacy.dp_epsilon,
            privacy.dp_delta,
        )
    return ValidatingStrategy(
        strategy,
        fed.max_update_norm,
        fed.min_train_nodes,
        dp=privacy.dp,
        # under SecAgg+ the hospitals clip before masking: no single update to check here
        clip_norm=privacy.dp_clip_norm if hospital and not fed.secure_aggregation else 0.0,
        tamper=adversary,
    )


def write_report_logged(run_dir: Path) -> None:
    """Write the run report; a failure to plot must not hide the run's own outcome."""
    from server.report import write_report

    try:
        log(INFO, "[fedclinic] report: %s", write_report(run_dir))
    except Exception as err:  # the model and metrics are already saved
        log(ERROR, "[fedclinic] report not written (%s); run `fedclinic report %s`", err, run_dir)


app = ServerApp()
app.main()(run)

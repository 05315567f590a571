"""The ServerApp a coordinator runs: rounds of federated training of one Keras model."""

from __future__ import annotations

import sys
from logging import ERROR, INFO
from pathlib import Path

import keras
from flwr.app import ArrayRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from common.config import AppConfig, parse_app_config
from common.errors import FedclinicError
from common.models import build_model
from server.loop import run_federation
from server.run_dir import RunDirectory, resolve_run_dir
from server.strategies import build_strategy


def run(grid: Grid, context: Context) -> None:
    """Entry point: parse the run config once, then federate; config errors end the run."""
    try:
        config = parse_app_config(dict(context.run_config))
    except FedclinicError as err:
        log(ERROR, "%s", err)
        sys.exit(2)
    federate(grid, config, dict(context.run_config), Path.cwd())


def federate(grid: Grid, config: AppConfig, resolved: dict[str, object], cwd: Path) -> Path:
    run_dir = RunDirectory(
        resolve_run_dir(config.federation.run_dir, config.federation.strategy, cwd)
    )
    run_dir.create()
    run_dir.write_config(resolved)
    log(INFO, "[fedclinic] run directory: %s", run_dir.path)

    keras.utils.set_random_seed(config.seed)
    model = build_model(config.model, config.data.spec())
    final = run_federation(
        grid, build_strategy(config), ArrayRecord(model.get_weights()), config, run_dir
    )
    model.set_weights(final.to_numpy_ndarrays())
    saved = run_dir.save_model(model)
    log(INFO, "[fedclinic] final model: %s", saved)
    log(INFO, "[fedclinic] run directory: %s", run_dir.path)
    return run_dir.path


app = ServerApp()
app.main()(run)

"""Run the Flower App under the Simulation Engine in this process, with given settings.

``flwr run .`` is the user-facing way to simulate. This runner is for programs that
need to choose the settings themselves (tests, benchmarks, sweeps): it starts Flower's
``run_simulation`` with our ServerApp and the hospitals' ClientApp (built by
``client.app.build_client_app``, production mods included, with simulated hospitals' data
and the unreliable-hospital mod; the coordinator gets the simulated attackers)
and hands both the declared defaults from ``pyproject.toml`` merged with the caller's
overrides as the run config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import Grid, ServerApp

from client.app import build_client_app
from common.config import parse_app_config
from common.manifest import declared_defaults, project_root, with_overrides
from common.quiet import import_keras, quiet_ray
from server.app import federate
from simulations.adversary import simulated_adversary
from simulations.cluster import backend_config, cluster_address
from simulations.hospitals import simulated_hospital
from simulations.unreliable import unreliable_hospital


def run_config_with(overrides: dict[str, Any]) -> dict[str, Any]:
    """Declared defaults with ``overrides`` applied; an unknown key is a ConfigError."""
    return with_overrides(declared_defaults(project_root() / "pyproject.toml"), overrides)


def with_run_config(values: dict[str, Any]) -> Any:
    """A client mod that gives the ClientApp ``values`` as its run config."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        configured = Context(
            run_id=context.run_id,
            node_id=context.node_id,
            node_config=context.node_config,
            state=context.state,
            run_config=dict(values),
        )
        return call_next(msg, configured)

    return mod


def simulation_apps(run_config: dict[str, Any], cwd: Path) -> tuple[ServerApp, ClientApp]:
    config = parse_app_config(run_config)
    server_app = ServerApp()

    def main(grid: Grid, context: Context) -> None:
        federate(grid, config, run_config, cwd, adversaries=simulated_adversary)

    server_app.main()(main)
    client_app = build_client_app(
        simulated_hospital,
        mods=[unreliable_hospital],
        context_mods=[with_run_config(run_config)],
    )
    return server_app, client_app


def simulate(
    overrides: dict[str, Any],
    num_hospitals: int,
    cpus_per_hospital: float = 1.0,
    cwd: Path | None = None,
    ray_address: str | None = None,
    gpus_per_hospital: float = 0.0,
) -> None:
    """Simulate ``num_hospitals`` hospitals with the given config overrides.

    ``ray_address``: a running Ray cluster to run the hospitals' ClientApps on
    (``HOST:PORT``), or ``local``; None: ``RAY_ADDRESS``, else ``local``
    (:mod:`simulations.cluster`).
    """
    backend = backend_config(
        cluster_address(ray_address, os.environ), cpus_per_hospital, gpus_per_hospital
    )
    run_config = run_config_with(overrides)
    server_app, client_app = simulation_apps(run_config, cwd or Path.cwd())
    quiet_ray()  # before Ray starts; TensorFlow before Flower's simulation imports it
    import_keras()
    from flwr.simulation import run_simulation

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_hospitals,
        backend_config=backend,
    )

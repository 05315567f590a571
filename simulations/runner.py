"""Run the Flower App under the Simulation Engine in this process, with given settings.

``flwr run .`` is the user-facing way to simulate. This runner is for programs that
need to choose the settings themselves (tests, benchmarks, sweeps): it starts Flower's
``run_simulation`` with our ServerApp and ClientApp and hands both the declared defaults
from ``pyproject.toml`` merged with the caller's overrides as the run config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from client.app import evaluate, train
from client.mods import contain_errors, only_weights_leave
from common.config import declared_defaults, parse_app_config, project_root
from server.app import federate


def run_config_with(overrides: dict[str, Any]) -> dict[str, Any]:
    """Declared defaults with ``overrides`` applied; unknown keys are refused."""
    defaults = declared_defaults(project_root() / "pyproject.toml")
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise KeyError(f"Unknown config key(s): {unknown}")
    return {**defaults, **overrides}


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
        federate(grid, config, run_config, cwd)

    server_app.main()(main)
    client_app = ClientApp(mods=[with_run_config(run_config), contain_errors, only_weights_leave])
    client_app.train()(train)
    client_app.evaluate()(evaluate)
    return server_app, client_app


def simulate(
    overrides: dict[str, Any],
    num_hospitals: int,
    cpus_per_hospital: float = 1.0,
    cwd: Path | None = None,
) -> None:
    """Simulate ``num_hospitals`` hospitals with the given config overrides."""
    run_config = run_config_with(overrides)
    server_app, client_app = simulation_apps(run_config, cwd or Path.cwd())
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_hospitals,
        backend_config={"client_resources": {"num_cpus": cpus_per_hospital, "num_gpus": 0.0}},
    )

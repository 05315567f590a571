"""Run a real Flower simulation in which chosen hospitals misbehave (test-only ClientApp).

Used by tests/test_e2e_coordinator.py in subprocesses. ``faults`` maps a partition id to
what that hospital does on every training message, bypassing the product's mods so the
server-side checks are what stands between it and the global model:

- ``raise``: the ClientApp raises (Flower turns it into an error reply);
- ``nan``: returns the received arrays with NaN in the first one;
- ``shapes``: returns arrays whose last one has the wrong shape;
- ``slow:SECONDS``: sleeps that long, then trains normally (to exceed ``round-timeout``).

Usage: ``python tests/e2e_faults.py HOSPITALS OVERRIDES_JSON [FAULTS_JSON]``.
Exits 2 with ``error: <message>`` on stderr when the run ends with a fedclinic error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.simulation import run_simulation

from common.errors import FedclinicError
from simulations.runner import run_config_with, simulation_apps


def bad_arrays(kind: str, received: list[np.ndarray]) -> list[np.ndarray]:
    arrays = [a.copy() for a in received]
    if kind == "nan":
        arrays[0][...] = np.nan
    elif kind == "shapes":
        arrays[-1] = np.zeros((arrays[-1].size + 1,), dtype=arrays[-1].dtype)
    else:
        raise ValueError(f"unknown fault {kind!r}")
    return arrays


def faulty_client_app(product: ClientApp, faults: dict[int, str]) -> ClientApp:
    app = ClientApp()

    def fault_of(context: Context) -> str | None:
        return faults.get(int(context.node_config["partition-id"]))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        kind = fault_of(context)
        if kind is None:
            return product(msg, context)
        if kind == "raise":
            raise RuntimeError("simulated hospital crash")
        if kind.startswith("slow:"):
            time.sleep(float(kind.removeprefix("slow:")))
            return product(msg, context)
        received = msg.content.array_records["arrays"].to_numpy_ndarrays()
        metrics = MetricRecord({"num-examples": 100, "loss": 1.0, "accuracy": 0.5})
        content = RecordDict(
            {"arrays": ArrayRecord(bad_arrays(kind, received)), "metrics": metrics}
        )
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        if fault_of(context) == "raise":
            raise RuntimeError("simulated hospital crash")
        return product(msg, context)

    return app


def main(hospitals: int, overrides: dict[str, Any], faults: dict[int, str]) -> int:
    run_config = run_config_with(overrides)
    server_app, client_app = simulation_apps(run_config, Path.cwd())
    try:
        run_simulation(
            server_app=server_app,
            client_app=faulty_client_app(client_app, faults) if faults else client_app,
            num_supernodes=hospitals,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    except FedclinicError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    faults_arg = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    sys.exit(
        main(int(sys.argv[1]), json.loads(sys.argv[2]), {int(k): v for k, v in faults_arg.items()})
    )

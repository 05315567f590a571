"""Child process of the benchmarks: one Flower Simulation Engine run, then exit.

``python -m benchmarks._simulate '<json>'`` with ``overrides`` (run config, including
``run-dir``), ``hospitals``, ``cpus_per_hospital`` and ``client`` (``fedclinic`` or
``quickstart``). Ray and TensorFlow state live and die with this process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from flwr.simulation import run_simulation

from common.manifest import project_root
from simulations.runner import run_config_with, simulation_apps


def main(spec: dict[str, Any]) -> int:
    run_config = run_config_with(spec["overrides"])
    server_app, client_app = simulation_apps(run_config, project_root())
    if spec["client"] == "quickstart":
        from benchmarks._quickstart import quickstart_client_app

        client_app = quickstart_client_app(run_config)
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=int(spec["hospitals"]),
        backend_config={
            "client_resources": {"num_cpus": float(spec["cpus_per_hospital"]), "num_gpus": 0.0}
        },
    )
    metrics = Path(run_config["run-dir"]) / "metrics.json"
    payload = json.loads(metrics.read_text("utf-8")) if metrics.is_file() else {}
    rounds = payload.get("rounds", [])
    stopped_early = "stopped-early" in payload.get("outcome", {})
    if len(rounds) != run_config["num-server-rounds"] and not stopped_early:
        print(f"expected {run_config['num-server-rounds']} rounds, got {len(rounds)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))

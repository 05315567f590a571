"""Run a real Flower simulation in which chosen hospitals misbehave (test-only ClientApp).

Used by tests/test_e2e_coordinator.py in subprocesses. ``faults`` maps a partition id to
what that hospital does, per phase: ``{"train": KIND, "evaluate": KIND, "train@2": KIND}``
(a ``PHASE@ROUND`` entry wins over the plain ``PHASE`` entry in that round). Every fault
is applied to the product ClientApp's real reply, after its mods, so the reply is
contract-valid except for the one fault and the coordinator's checks are what stands
between it and the global model:

- ``extra-metric``: the metric record gets an undeclared key ``debug-score``;
- ``missing-metric``: ``accuracy`` is left out of the metric record;
- ``renamed-record``: the train reply's ``arrays`` record is named ``weights`` / the
  evaluate reply's ``metrics`` record is named ``results``;
- ``second-record``: a second metric record ``extra`` is added;
- ``nan``: NaN in the first array; ``shapes``: the last array has one element too many;
- ``raise``: the ClientApp raises (Flower turns it into an error reply);
- ``slow:SECONDS``: sleeps that long, then answers normally (to exceed ``round-timeout``).

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
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.simulation import run_simulation

from common.contract import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY
from common.errors import FedclinicError
from simulations.runner import run_config_with, simulation_apps

Faults = dict[int, dict[str, str]]


def bad_arrays(kind: str, arrays: ArrayRecord) -> ArrayRecord:
    values = {name: array.numpy().copy() for name, array in arrays.items()}
    first, last = next(iter(values)), list(values)[-1]
    if kind == "nan":
        values[first][...] = np.nan
    else:  # shapes
        values[last] = np.zeros((values[last].size + 1,), dtype=values[last].dtype)
    return ArrayRecord({name: Array(value) for name, value in values.items()})


def faulty_content(kind: str, phase: str, content: RecordDict) -> RecordDict:
    """``content`` with exactly one fault of ``kind``."""
    records: dict[str, Any] = dict(content.items())
    metrics = dict(content.metric_records[METRICS_KEY].items())
    if kind == "extra-metric":
        records[METRICS_KEY] = MetricRecord({**metrics, "debug-score": 1.0})
    elif kind == "missing-metric":
        records[METRICS_KEY] = MetricRecord({k: v for k, v in metrics.items() if k != "accuracy"})
    elif kind == "renamed-record":
        old, new = (ARRAYS_KEY, "weights") if phase == "train" else (METRICS_KEY, "results")
        records = {new if key == old else key: value for key, value in records.items()}
    elif kind == "second-record":
        records["extra"] = MetricRecord({"x": 1.0})
    elif kind in ("nan", "shapes"):
        records[ARRAYS_KEY] = bad_arrays(kind, content.array_records[ARRAYS_KEY])
    else:
        raise ValueError(f"unknown fault {kind!r}")
    return RecordDict(records)


def fault_of(faults: Faults, msg: Message, context: Context) -> str | None:
    spec = faults.get(int(context.node_config["partition-id"]), {})
    phase = msg.metadata.message_type
    server_round = msg.content.config_records[CONFIG_KEY].get("server-round")
    return spec.get(f"{phase}@{server_round!r}", spec.get(phase))


def faulty_client_app(product: ClientApp, faults: Faults) -> ClientApp:
    app = ClientApp()

    def handle(msg: Message, context: Context) -> Message:
        kind = fault_of(faults, msg, context)
        if kind == "raise":
            raise RuntimeError("simulated hospital crash")
        if kind is not None and kind.startswith("slow:"):
            time.sleep(float(kind.removeprefix("slow:")))
            kind = None
        reply = product(msg, context)
        if kind is None or reply.has_error():
            return reply
        content = faulty_content(kind, msg.metadata.message_type, reply.content)
        return Message(content=content, reply_to=msg)

    app.train()(handle)
    app.evaluate()(handle)
    return app


def main(hospitals: int, overrides: dict[str, Any], faults: Faults) -> int:
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

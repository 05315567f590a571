"""Run a small real Flower simulation and record the shape of every ClientApp reply.

Used by tests/test_e2e_simulation.py in a subprocess (Ray must not start in pytest's own
process). Writes one JSON line per reply to ``<out>/replies.jsonl``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.simulation import run_simulation

from common.contract import ARRAYS_KEY, reply_violations
from simulations.runner import run_config_with, simulation_apps


def describe(request: Message, reply: Message) -> dict[str, Any]:
    """A reply's structure (record kinds, array shapes, metric types, the site record) and
    every way it breaks the contract (``violations``, checked where the reply leaves)."""
    message_type = request.metadata.message_type
    if reply.has_error():
        return {"type": message_type, "error": reply.error.reason}
    content = reply.content
    reference = request.content.array_records.get(ARRAYS_KEY)
    return {
        "type": message_type,
        "violations": reply_violations(message_type, content, reference),
        "node": int(request.metadata.dst_node_id),
        "sent_arrays": {
            key: [[list(a.shape), a.dtype] for a in record.values()]
            for key, record in request.content.array_records.items()
        },
        "arrays": {
            key: [[list(a.shape), a.dtype] for a in record.values()]
            for key, record in content.array_records.items()
        },
        "metrics": {
            key: {name: type(value).__name__ for name, value in record.items()}
            for key, record in content.metric_records.items()
        },
        "configs": {
            key: {name: str(value) for name, value in record.items()}
            for key, record in content.config_records.items()
        },
    }


def capture(out: Path) -> Any:
    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        with (out / "replies.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(describe(msg, reply)) + "\n")
        return reply

    return mod


def main(out: Path, hospitals: int, overrides: dict[str, Any]) -> None:
    run_config = run_config_with({**overrides, "run-dir": str(out / "run")})
    server_app, client_app = simulation_apps(run_config, out)
    # The capture mod wraps the whole ClientApp, mods included: it sees what would leave.
    observed = ClientApp(mods=[capture(out)])
    observed.train()(client_app)
    observed.evaluate()(client_app)
    run_simulation(
        server_app=server_app,
        client_app=observed,
        num_supernodes=hospitals,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))

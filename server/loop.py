"""The round loop: one place that drives a Flower strategy's hooks, round after round.

Flower's ``Strategy.start`` runs the same hooks but keeps no per-node record and cannot
be resumed or bounded per round. This loop calls ``configure_train`` /
``aggregate_train`` / ``configure_evaluate`` / ``aggregate_evaluate`` itself and records
each round (aggregated and per-node metrics, failures, seconds) in the run directory.
Anything that changes how a round runs — checkpoints, time bounds, update validation,
secure aggregation — slots in here or as a strategy wrapper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common.config import AppConfig
from server.run_dir import RunDirectory


@dataclass(frozen=True)
class RoundOutcome:
    arrays: ArrayRecord
    record: dict[str, Any]


def train_config_record(config: AppConfig) -> ConfigRecord:
    """What every hospital is told about local training this round."""
    train = config.train
    return ConfigRecord(
        {
            "local-epochs": train.local_epochs,
            "batch-size": train.batch_size,
            "learning-rate": train.learning_rate,
            "proximal-mu": train.proximal_mu if config.federation.strategy == "fedprox" else 0.0,
        }
    )


def json_metrics(record: MetricRecord | None) -> dict[str, float | int | None]:
    """Metrics as JSON-safe numbers: NaN / Inf (undefined) become null."""
    if record is None:
        return {}
    out: dict[str, float | int | None] = {}
    for key, value in record.items():
        if isinstance(value, int | float):
            out[key] = value if math.isfinite(value) else None
    return out


def per_node(replies: Iterable[Message]) -> dict[str, dict[str, Any]]:
    nodes: dict[str, dict[str, Any]] = {}
    for reply in replies:
        node = str(reply.metadata.src_node_id)
        if reply.has_error():
            nodes[node] = {"status": "failed", "reason": reply.error.reason}
        else:
            metrics = next(iter(reply.content.metric_records.values()), None)
            nodes[node] = {"status": "ok", "metrics": json_metrics(metrics)}
    return nodes


def run_round(
    grid: Grid, strategy: Strategy, arrays: ArrayRecord, server_round: int, config: AppConfig
) -> RoundOutcome:
    started = time.monotonic()
    timeout = config.federation.round_timeout
    train_replies = list(
        grid.send_and_receive(
            strategy.configure_train(server_round, arrays, train_config_record(config), grid),
            timeout=timeout,
        )
    )
    new_arrays, train_metrics = strategy.aggregate_train(server_round, train_replies)
    if new_arrays is None:
        log(WARNING, "Round %d: no update aggregated; the global model is unchanged", server_round)
        new_arrays = arrays
    evaluate_replies = list(
        grid.send_and_receive(
            strategy.configure_evaluate(server_round, new_arrays, ConfigRecord(), grid),
            timeout=timeout,
        )
    )
    evaluate_metrics = strategy.aggregate_evaluate(server_round, evaluate_replies)
    record = {
        "round": server_round,
        "train": json_metrics(train_metrics),
        "evaluate": json_metrics(evaluate_metrics),
        "nodes": {"train": per_node(train_replies), "evaluate": per_node(evaluate_replies)},
        "seconds": round(time.monotonic() - started, 3),
    }
    return RoundOutcome(arrays=new_arrays, record=record)


def run_federation(
    grid: Grid,
    strategy: Strategy,
    arrays: ArrayRecord,
    config: AppConfig,
    run_dir: RunDirectory,
) -> ArrayRecord:
    """Run every round; return the final global arrays."""
    rounds = config.federation.num_server_rounds
    for server_round in range(1, rounds + 1):
        outcome = run_round(grid, strategy, arrays, server_round, config)
        arrays = outcome.arrays
        run_dir.add_round(outcome.record)
        log(INFO, "%s", round_summary(outcome.record, rounds))
    return arrays


def round_summary(record: dict[str, Any], total_rounds: int) -> str:
    def fmt(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
        return " ".join(
            f"{key} {metrics[key]:.4f}" if isinstance(metrics.get(key), float) else f"{key} n/a"
            for key in keys
        )

    nodes = record["nodes"]["train"]
    ok = sum(1 for node in nodes.values() if node["status"] == "ok")
    return (
        f"[fedclinic] round {record['round']}/{total_rounds} ({record['seconds']:.1f} s, "
        f"{ok}/{len(nodes)} hospitals trained) | train: "
        f"{fmt(record['train'], ('loss', 'accuracy'))} | evaluate: "
        f"{fmt(record['evaluate'], ('loss', 'accuracy', 'auc', 'sensitivity', 'specificity'))}"
    )

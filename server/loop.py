"""The round loop: one place that drives a Flower strategy's hooks, round after round.

Flower's ``Strategy.start`` runs the same hooks but keeps no per-node record, waits
forever for nodes and cannot be resumed. This loop calls ``configure_train`` /
``aggregate_train`` / ``configure_evaluate`` / ``aggregate_evaluate`` itself and, per
round: waits for hospitals at most ``node-wait-timeout`` seconds, gives replies at most
``round-timeout`` seconds, records every sampled node as ok / failed / timeout /
rejected, stops the run when fewer than ``min-train-nodes`` valid updates arrived,
optionally evaluates centrally, and writes a checkpoint before ``metrics.json``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid

from common.config import AppConfig
from common.errors import RunError
from server.validation import ValidatingStrategy
from server.waits import BoundedGrid, required_nodes

CentralEval = Callable[[list[np.ndarray]], dict[str, Any]]
RoundDone = Callable[[int, ArrayRecord, dict[str, Any]], None]
STATUSES = ("ok", "failed", "timeout", "rejected")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
REASON_CHARS = 200


def short_reason(reason: str) -> str:
    """A failure reason as one readable line: the last non-empty line, no colours, bounded."""
    lines = [line.strip() for line in ANSI_ESCAPE.sub("", reason).splitlines() if line.strip()]
    text = lines[-1] if lines else "no reason given"
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


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


def per_node(
    sent: Iterable[Message], replies: Iterable[Message], rejected: dict[int, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Every sampled node's outcome: ok (with metrics), failed, timeout or rejected."""
    nodes: dict[str, dict[str, Any]] = {
        str(msg.metadata.dst_node_id): {"status": "timeout", "reason": "no reply in time"}
        for msg in sent
    }
    for reply in replies:
        node_id = reply.metadata.src_node_id
        if reply.has_error():
            nodes[str(node_id)] = {
                "status": "failed",
                "reason": short_reason(reply.error.reason or ""),
            }
        elif rejected and node_id in rejected:
            nodes[str(node_id)] = {"status": "rejected", "reason": rejected[node_id]}
        else:
            metrics = next(iter(reply.content.metric_records.values()), None)
            nodes[str(node_id)] = {"status": "ok", "metrics": json_metrics(metrics)}
    for node, outcome in nodes.items():
        if outcome["status"] == "timeout":
            log(WARNING, "node %s: no reply within `round-timeout`", node)
    return nodes


def participation(nodes: dict[str, dict[str, Any]]) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for outcome in nodes.values():
        counts[outcome["status"]] += 1
    return {"sampled": len(nodes), **counts}


def _exchange(
    grid: Grid,
    configure: Callable[[Grid], Iterable[Message]],
    config: AppConfig,
) -> tuple[list[Message], list[Message]]:
    fed = config.federation
    bounded = BoundedGrid(grid, required_nodes(fed), fed.node_wait_timeout)
    bounded.wait()
    sent = list(configure(bounded))
    if not sent:
        return [], []
    return sent, list(grid.send_and_receive(sent, timeout=fed.round_timeout))


def run_round(
    grid: Grid,
    strategy: ValidatingStrategy,
    arrays: ArrayRecord,
    server_round: int,
    config: AppConfig,
    central_eval: CentralEval | None = None,
) -> RoundOutcome:
    started = time.monotonic()
    fed = config.federation
    sent, replies = _exchange(
        grid,
        lambda g: strategy.configure_train(server_round, arrays, train_config_record(config), g),
        config,
    )
    new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
    rejected = {r.node_id: r.reason for r in strategy.rejections.get(server_round, [])}
    train_nodes = per_node(sent, replies, rejected)
    counts = participation(train_nodes)
    if counts["ok"] < fed.min_train_nodes or new_arrays is None:
        remains = (
            f"The checkpoint of round {server_round - 1} remains."
            if server_round > 1
            else "No round completed, so there is no checkpoint."
        )
        raise RunError(
            f"Round {server_round} stopped the run: {counts['ok']} of {counts['sampled']} "
            f"hospitals sent a valid update ({counts['failed']} failed, {counts['timeout']} "
            f"timed out, {counts['rejected']} rejected); `min-train-nodes` is "
            f"{fed.min_train_nodes}. {remains}"
        )
    eval_sent, eval_replies = _exchange(
        grid,
        lambda g: strategy.configure_evaluate(server_round, new_arrays, ConfigRecord(), g),
        config,
    )
    evaluate_metrics = strategy.aggregate_evaluate(server_round, eval_replies)
    record: dict[str, Any] = {
        "round": server_round,
        "train": json_metrics(train_metrics),
        "evaluate": json_metrics(evaluate_metrics),
        "participation": counts,
        "nodes": {"train": train_nodes, "evaluate": per_node(eval_sent, eval_replies)},
    }
    if central_eval is not None:
        record["central"] = central_eval(new_arrays.to_numpy_ndarrays())
    record["seconds"] = round(time.monotonic() - started, 3)
    return RoundOutcome(arrays=new_arrays, record=record)


def run_federation(
    grid: Grid,
    strategy: ValidatingStrategy,
    arrays: ArrayRecord,
    config: AppConfig,
    first_round: int,
    on_round_done: RoundDone,
    central_eval: CentralEval | None = None,
) -> ArrayRecord:
    """Run rounds ``first_round..num-server-rounds``; return the final global arrays.

    ``on_round_done(round, arrays, record)`` persists each round (checkpoint, metrics).
    """
    rounds = config.federation.num_server_rounds
    for server_round in range(first_round, rounds + 1):
        outcome = run_round(grid, strategy, arrays, server_round, config, central_eval)
        arrays = outcome.arrays
        on_round_done(server_round, arrays, outcome.record)
        log(INFO, "%s", round_summary(outcome.record, rounds))
    return arrays


def round_summary(record: dict[str, Any], total_rounds: int) -> str:
    def fmt(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
        return " ".join(
            f"{key} {metrics[key]:.4f}" if isinstance(metrics.get(key), float) else f"{key} n/a"
            for key in keys
        )

    counts = record["participation"]
    central = record.get("central")
    central_text = (
        f" | central: {fmt(central, ('loss', 'accuracy', 'auc'))}" if central is not None else ""
    )
    return (
        f"[fedclinic] round {record['round']}/{total_rounds} ({record['seconds']:.1f} s, "
        f"{counts['ok']}/{counts['sampled']} hospitals trained, {counts['failed']} failed, "
        f"{counts['timeout']} timed out, {counts['rejected']} rejected) | train: "
        f"{fmt(record['train'], ('loss', 'accuracy'))} | evaluate: "
        f"{fmt(record['evaluate'], ('loss', 'accuracy', 'auc', 'sensitivity', 'specificity'))}"
        f"{central_text}"
    )

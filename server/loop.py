"""The round loop: one place that drives a Flower strategy's hooks, round after round.

Flower's ``Strategy.start`` runs the same hooks but keeps no per-node record, waits
forever for nodes and cannot be resumed. This loop calls ``configure_train`` /
``aggregate_train`` / ``configure_evaluate`` / ``aggregate_evaluate`` itself and, per
round: waits for hospitals at most ``node-wait-timeout`` seconds, gives replies at most
``round-timeout`` seconds, records (and logs) every sampled node by name as ok / failed /
timeout / rejected, stops the run when fewer than ``min-train-nodes`` valid updates
arrived, optionally evaluates centrally, records the privacy spent (``privacy``: mode, δ
and cumulative ε, when ``dp`` is on; :func:`server.privacy.round_privacy`), and writes a
checkpoint before ``metrics.json``.
A node's name is the one the coordinator's site registry gives its key (``site-registry``,
:mod:`server.registry`), else the ``site-name`` it reported in any reply of the run
(:mod:`server.records`); a registered node reporting another name is flagged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid

from common.config import AppConfig
from common.contract import DATA_KIND, EPSILON_KEY, METRICS_KEY, SPLIT_KEY, reported_site
from common.errors import RunError
from common.text import strip_ansi
from server.checkpoint import checkpoint_remains
from server.privacy import round_privacy
from server.records import SiteBook, participation
from server.registry import SiteRegistry
from server.selection import ModelSelection
from server.validation import ValidatingStrategy
from server.waits import BoundedGrid, required_nodes

CentralEval = Callable[[list[np.ndarray]], dict[str, Any]]
RoundDone = Callable[[int, ArrayRecord, dict[str, Any]], None]
REASON_CHARS = 200


def short_reason(reason: str) -> str:
    """A failure reason as one readable line: the last non-empty line, no colours, bounded."""
    lines = [line.strip() for line in strip_ansi(reason).splitlines() if line.strip()]
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
            "local-steps": train.local_steps,
            "local-optimizer": train.local_optimizer,
            "local-momentum": train.local_momentum,
            "augment": train.augment,
            "augment-shift": train.augment_shift,
            "augment-rotation": train.augment_rotation,
            "augment-intensity": train.augment_intensity,
            "augment-contrast": train.augment_contrast,
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


def _outcome(reply: Message, rejected: Mapping[int, str]) -> dict[str, Any]:
    node_id = reply.metadata.src_node_id
    if reply.has_error():
        return {"status": "failed", "reason": short_reason(reply.error.reason or "")}
    if node_id in rejected:
        return {"status": "rejected", "reason": rejected[node_id]}
    return {"status": "ok", "metrics": json_metrics(reply.content.metric_records[METRICS_KEY])}


def per_node(
    phase: str,
    sent: Iterable[Message],
    replies: Iterable[Message],
    rejected: Mapping[int, str],
    book: SiteBook,
    round_timeout: float,
) -> dict[str, dict[str, Any]]:
    """Every sampled node's named outcome: ok (with metrics), failed, timeout or rejected.

    Each reply with a valid ``site`` record teaches ``book`` the node's name and data kind,
    even when the rest of the reply is rejected.
    """
    outcomes: dict[int, dict[str, Any]] = {
        msg.metadata.dst_node_id: {
            "status": "timeout",
            "reason": f"no reply within `round-timeout` ({round_timeout:g} s)",
        }
        for msg in sent
    }
    for reply in replies:
        node_id = reply.metadata.src_node_id
        site = None if reply.has_error() else reported_site(reply.content)
        if site is not None:
            book.learn(node_id, site)
        outcomes[node_id] = _outcome(reply, rejected)
    for line in book.new_warnings(sorted(outcomes)):
        log(WARNING, "%s", line)
    nodes = {str(node): {**book.describe(node), **outcome} for node, outcome in outcomes.items()}
    for node, outcome in nodes.items():
        if outcome["status"] != "ok":
            who = (
                outcome["name"] if DATA_KIND not in outcome else f"{outcome['name']} (node {node})"
            )
            log(
                WARNING,
                "[fedclinic] %s %s %s: %s",
                phase,
                who,
                outcome["status"],
                outcome["reason"],
            )
    return nodes


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


STOP_REASONS_SHOWN = 3


def stop_message(
    server_round: int,
    nodes: Mapping[str, Mapping[str, Any]],
    min_train_nodes: int,
    dp: str = "off",
) -> str:
    """One line: how many hospitals sent a valid update, and why the others did not.

    Under hospital-level DP Flower's accountant releases an aggregate only when every
    sampled hospital (exactly ``min-train-nodes``) sent a valid update.
    """
    counts = participation(nodes)
    problems = sorted(
        {f"{o['name']} {o['status']}: {o['reason']}" for o in nodes.values() if o["status"] != "ok"}
    )
    shown = "; ".join(problems[:STOP_REASONS_SHOWN])
    more = (
        f" (+{len(problems) - STOP_REASONS_SHOWN} more)"
        if len(problems) > STOP_REASONS_SHOWN
        else ""
    )
    why = f" Why: {shown}{more}." if problems else ""
    rule = (
        f"hospital-level DP aggregates only when all {min_train_nodes} sampled hospitals "
        "(`min-train-nodes`) send a valid update"
        if dp == "hospital"
        else f"`min-train-nodes` is {min_train_nodes}"
    )
    return (
        f"Round {server_round} stopped the run: {counts['ok']} of {counts['sampled']} "
        f"hospitals sent a valid update ({counts['failed']} failed, {counts['timeout']} "
        f"timed out, {counts['rejected']} rejected); {rule}.{why} "
        f"{checkpoint_remains(server_round)}"
    )


def evaluate_split(
    grid: Grid,
    strategy: ValidatingStrategy,
    arrays: ArrayRecord,
    server_round: int,
    config: AppConfig,
    split: str,
    book: SiteBook,
    registry: SiteRegistry | None,
) -> tuple[MetricRecord | None, dict[str, dict[str, Any]]]:
    """Score ``arrays`` on the hospitals' ``split`` (``val`` or ``test``): the aggregate
    metrics and every sampled node's outcome."""
    request = ConfigRecord({SPLIT_KEY: split})
    sent, replies = _exchange(
        grid, lambda g: strategy.configure_evaluate(server_round, arrays, request, g), config
    )
    metrics = strategy.aggregate_evaluate(server_round, replies)
    rejected = strategy.rejected(server_round, MessageType.EVALUATE)
    if registry is not None and sent:
        book.learn_registered(registry.names(grid))
    phase = "validation" if split == "val" else "evaluate"
    nodes = per_node(phase, sent, replies, rejected, book, config.federation.round_timeout)
    return metrics, nodes


def run_round(
    grid: Grid,
    strategy: ValidatingStrategy,
    arrays: ArrayRecord,
    server_round: int,
    config: AppConfig,
    central_eval: CentralEval | None = None,
    book: SiteBook | None = None,
    registry: SiteRegistry | None = None,
) -> RoundOutcome:
    """One round: train, aggregate the valid updates, evaluate; every node recorded.

    ``book`` remembers hospital names across rounds (a fresh one when not given);
    ``registry`` names nodes by their registered keys after each phase's replies.
    """
    started = time.monotonic()
    fed = config.federation
    book = SiteBook() if book is None else book
    sent, replies = _exchange(
        grid,
        lambda g: strategy.configure_train(server_round, arrays, train_config_record(config), g),
        config,
    )
    new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
    rejected = strategy.rejected(server_round, MessageType.TRAIN)
    if registry is not None:
        book.learn_registered(registry.names(grid))
    train_nodes = per_node("train", sent, replies, rejected, book, fed.round_timeout)
    counts = participation(train_nodes)
    if new_arrays is None:  # the strategy aggregates only from `min-train-nodes` valid updates
        raise RunError(
            stop_message(server_round, train_nodes, fed.min_train_nodes, config.privacy.dp)
        )
    val_metrics, val_nodes = evaluate_split(
        grid, strategy, new_arrays, server_round, config, "val", book, registry
    )
    evaluate_metrics, eval_nodes = evaluate_split(
        grid, strategy, new_arrays, server_round, config, "test", book, registry
    )
    record: dict[str, Any] = {
        "round": server_round,
        # a mean of the hospitals' ε means nothing: each one's is in its node record
        "train": {k: v for k, v in json_metrics(train_metrics).items() if k != EPSILON_KEY},
        "validation": json_metrics(val_metrics),
        "evaluate": json_metrics(evaluate_metrics),
        "participation": counts,
        "nodes": {"train": train_nodes, "validation": val_nodes, "evaluate": eval_nodes},
    }
    privacy = round_privacy(strategy, config, train_nodes)
    if privacy is not None:
        record["privacy"] = privacy
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
    history: Iterable[Mapping[str, Any]] = (),
    selection: ModelSelection | None = None,
) -> ArrayRecord:
    """Run rounds ``first_round..num-server-rounds``; return the final global arrays.

    ``on_round_done(round, arrays, record)`` persists each round (checkpoint, metrics);
    ``history`` (the rounds a resumed run restored) supplies the names known so far;
    ``selection`` keeps the best round by validation AUC (before ``on_round_done``, so the
    checkpoint holds it) and may stop the run early (``early-stopping-patience``).
    """
    rounds = config.federation.num_server_rounds
    registry = SiteRegistry.load(config.federation.site_registry)
    book = SiteBook(registered=None if registry is None else {})
    book.learn_rounds(history)
    for server_round in range(first_round, rounds + 1):
        outcome = run_round(
            grid, strategy, arrays, server_round, config, central_eval, book, registry
        )
        arrays = outcome.arrays
        if selection is not None:
            selection.observe(server_round, arrays, outcome.record)
        on_round_done(server_round, arrays, outcome.record)
        log(INFO, "%s", round_summary(outcome.record, rounds))
        stop = None if selection is None else selection.stop_reason(server_round)
        if stop is not None:
            log(INFO, "[fedclinic] %s", stop)
            break
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
    validation = record.get("validation")
    val_text = f" | validation: {fmt(validation, ('loss', 'auc'))}" if validation else ""
    return (
        f"[fedclinic] round {record['round']}/{total_rounds} ({record['seconds']:.1f} s, "
        f"{counts['ok']}/{counts['sampled']} hospitals trained, {counts['failed']} failed, "
        f"{counts['timeout']} timed out, {counts['rejected']} rejected) | train: "
        f"{fmt(record['train'], ('loss', 'accuracy'))}{val_text} | evaluate: "
        f"{fmt(record['evaluate'], ('loss', 'accuracy', 'auc', 'sensitivity', 'specificity'))}"
        f"{central_text}{privacy_text(record.get('privacy'))}"
    )


def privacy_text(privacy: Mapping[str, Any] | None) -> str:
    """`` | ε 2.31 (δ 1e-05)`` for a DP run's round line ("" without DP)."""
    if privacy is None:
        return ""
    epsilon = privacy.get("epsilon")
    shown = f"{epsilon:.2f}" if isinstance(epsilon, int | float) else "n/a"
    return f" | ε {shown} (δ {privacy['delta']:g})"

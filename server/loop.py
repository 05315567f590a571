"""The round loop: one place that drives a Flower strategy's hooks, round after round.

Flower's ``Strategy.start`` runs the same hooks but keeps no per-node record, waits
forever for nodes and cannot be resumed. This loop calls ``configure_train`` /
``aggregate_train`` / ``configure_evaluate`` / ``aggregate_evaluate`` itself and, per
round: waits for hospitals at most ``node-wait-timeout`` seconds, gives replies at most
``round-timeout`` seconds, records (and logs) every sampled node by name as ok / failed /
timeout / rejected, stops the run when fewer than ``min-train-nodes`` valid updates
arrived, optionally evaluates centrally, records the privacy spent (``privacy``: mode, δ
and cumulative ε, when ``dp`` is on; :func:`server.privacy.round_privacy`), and writes a
checkpoint before ``metrics.json``. What the record says of each node, and the round's
log line, are :mod:`server.round_record`'s.
A node's name is the one the coordinator's site registry gives its key (``site-registry``,
:mod:`server.registry`), else the ``site-name`` it reported in any reply of the run
(:mod:`server.records`); a registered node reporting another name is flagged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid

from common.config import AppConfig
from common.contract import EPSILON_KEY, SPLIT_KEY
from common.errors import RunError
from server.privacy import round_privacy
from server.records import SiteBook, participation
from server.registry import SiteRegistry
from server.round_record import json_metrics, per_node, round_summary
from server.secure_aggregation import secure_train
from server.selection import ModelSelection
from server.train_phase import bounded, plain_train
from server.train_phase import train_config_record as train_config_record  # its old home
from server.validation import ValidatingStrategy

CentralEval = Callable[[list[np.ndarray]], dict[str, Any]]
RoundDone = Callable[[int, ArrayRecord, dict[str, Any]], None]


@dataclass(frozen=True)
class RoundOutcome:
    arrays: ArrayRecord
    record: dict[str, Any]


def _exchange(
    grid: Grid,
    configure: Callable[[Grid], Iterable[Message]],
    config: AppConfig,
) -> tuple[list[Message], list[Message]]:
    sent = list(configure(bounded(grid, config)))
    if not sent:
        return [], []
    return sent, list(grid.send_and_receive(sent, timeout=config.federation.round_timeout))


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
    history: Sequence[Mapping[str, Any]] = (),
) -> RoundOutcome:
    """One round: train, aggregate the valid updates, evaluate; every node recorded.

    The train phase is plain (every update reaches the strategy) or, with
    ``secure-aggregation``, SecAgg+ (:func:`server.secure_aggregation.secure_train`, whose
    scale comes from ``history``, the records of the rounds before). ``book`` remembers
    hospital names across rounds (a fresh one when not given); ``registry`` names nodes by
    their registered keys after each phase's replies.
    """
    started = time.monotonic()
    book = SiteBook() if book is None else book
    train = (
        secure_train(grid, strategy, arrays, server_round, config, book, registry, history)
        if config.federation.secure_aggregation
        else plain_train(grid, strategy, arrays, server_round, config, book, registry)
    )
    new_arrays, train_nodes = train.arrays, train.nodes
    if new_arrays is None:  # too few valid updates (`min-train-nodes`) or SecAgg+ halted
        raise RunError(train.stop)
    val_metrics, val_nodes = evaluate_split(
        grid, strategy, new_arrays, server_round, config, "val", book, registry
    )
    evaluate_metrics, eval_nodes = evaluate_split(
        grid, strategy, new_arrays, server_round, config, "test", book, registry
    )
    record: dict[str, Any] = {
        "round": server_round,
        # a mean of the hospitals' ε means nothing: each one's is in its node record
        "train": {k: v for k, v in json_metrics(train.metrics).items() if k != EPSILON_KEY},
        "validation": json_metrics(val_metrics),
        "evaluate": json_metrics(evaluate_metrics),
        "participation": participation(train_nodes),
        "nodes": {"train": train_nodes, "validation": val_nodes, "evaluate": eval_nodes},
        **train.record,
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
    records = list(history)
    book.learn_rounds(records)
    for server_round in range(first_round, rounds + 1):
        outcome = run_round(
            grid, strategy, arrays, server_round, config, central_eval, book, registry, records
        )
        if config.federation.secure_aggregation:  # SecAgg+ derives its scale from them
            records.append(outcome.record)
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

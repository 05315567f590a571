"""A round's train phase: what every hospital is told, the sample, and the plain exchange.

:func:`plain_train` sends the model to the sampled hospitals and aggregates their replies;
:func:`server.secure_aggregation.secure_train` is the SecAgg+ alternative. Both sample the
same way (:func:`sample_train`: the strategy's ``configure_train`` on a
:class:`~server.waits.BoundedGrid`) and return a :class:`TrainOutcome`, so the round loop
only picks one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common.serde import error_to_proto, metadata_to_proto, recorddict_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.serverapp import Grid

from common.config import AppConfig
from server.records import SiteBook
from server.registry import SiteRegistry
from server.round_record import per_node, stop_message
from server.validation import ValidatingStrategy
from server.waits import BoundedGrid, required_nodes


@dataclass(frozen=True)
class TrainOutcome:
    """The new global arrays (None: the run stops, for the one-line reason ``stop``), the
    aggregated train metrics, every sampled node's record, and what the round record
    gains (``train-bytes``; under SecAgg+ also ``secure-aggregation``)."""

    arrays: ArrayRecord | None
    metrics: MetricRecord | None
    nodes: dict[str, dict[str, Any]]
    record: dict[str, Any] = field(default_factory=dict)
    stop: str = ""


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


def bounded(grid: Grid, config: AppConfig) -> BoundedGrid:
    """``grid`` once enough hospitals are connected (at most ``node-wait-timeout``)."""
    fed = config.federation
    waiting = BoundedGrid(grid, required_nodes(fed), fed.node_wait_timeout)
    waiting.wait()
    return waiting


def sample_train(
    grid: Grid,
    strategy: ValidatingStrategy,
    arrays: ArrayRecord,
    server_round: int,
    config: AppConfig,
) -> list[Message]:
    """The strategy's train requests for this round (its sample), after a bounded wait."""
    return list(
        strategy.configure_train(
            server_round, arrays, train_config_record(config), bounded(grid, config)
        )
    )


def message_bytes(messages: Iterable[Message]) -> int:
    """Their serialized size, as Flower sends them (protobuf ``Message``).

    A strategy's requests all carry one content object (the model): its size is computed
    once, not once per hospital; each message adds its own metadata (and error).
    """
    content_sizes: dict[int, int] = {}
    total = 0
    for message in messages:
        error = error_to_proto(message.error) if message.has_error() else None
        total += ProtoMessage(metadata=metadata_to_proto(message.metadata), error=error).ByteSize()
        if message.has_content():
            key = id(message.content)
            if key not in content_sizes:
                content_sizes[key] = recorddict_to_proto(message.content).ByteSize()
            total += _field_size(content_sizes[key])
    return total


def _field_size(size: int) -> int:
    """A length-delimited protobuf field of ``size`` bytes (field number < 16): one tag byte,
    the length as a varint, then the bytes."""
    return 1 + max(1, (size.bit_length() + 6) // 7) + size


def train_bytes(sent: int, received: int, hospitals: int) -> dict[str, int]:
    """The round record's ``train-bytes``."""
    return {"sent": sent, "received": received, "hospitals": hospitals}


def plain_train(
    grid: Grid,
    strategy: ValidatingStrategy,
    arrays: ArrayRecord,
    server_round: int,
    config: AppConfig,
    book: SiteBook,
    registry: SiteRegistry | None,
) -> TrainOutcome:
    """Every sampled hospital's update reaches the (validating) strategy."""
    fed = config.federation
    sent = sample_train(grid, strategy, arrays, server_round, config)
    replies = list(grid.send_and_receive(sent, timeout=fed.round_timeout)) if sent else []
    new_arrays, metrics = strategy.aggregate_train(server_round, replies)
    rejected = strategy.rejected(server_round, MessageType.TRAIN)
    if registry is not None:
        book.learn_registered(registry.names(grid))
    nodes = per_node(
        "train",
        sent,
        replies,
        rejected,
        book,
        fed.round_timeout,
        update_norms=strategy.update_norms(server_round),
    )
    stop = (
        ""
        if new_arrays is not None
        else stop_message(server_round, nodes, fed.min_train_nodes, config.privacy.dp)
    )
    sizes = train_bytes(message_bytes(sent), message_bytes(replies), len(sent))
    return TrainOutcome(new_arrays, metrics, nodes, {"train-bytes": sizes}, stop)

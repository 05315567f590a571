"""Update validation: a strategy wrapper that keeps broken updates out of aggregation.

Like Flower's differential-privacy wrappers, :class:`ValidatingStrategy` wraps any
strategy. Before the wrapped ``aggregate_train`` runs it drops every reply whose arrays
do not match the global model (keys, shapes, dtypes), contain NaN or Inf, lack a
positive finite example count, or — when ``max_update_norm`` > 0 — move the model
farther than that (L2 norm over all arrays). Each rejection is logged with node and
reason and kept in :attr:`ValidatingStrategy.rejections` for the run record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


@dataclass(frozen=True)
class Rejection:
    node_id: int
    reason: str


def update_norm(update: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """L2 norm of ``update - reference`` over all arrays together (float64)."""
    total = 0.0
    for new, old in zip(update, reference, strict=True):
        delta = new.astype(np.float64) - old.astype(np.float64)
        total += float(np.sum(delta * delta))
    return math.sqrt(total)


def array_problem(
    update: list[np.ndarray], reference: list[np.ndarray], max_update_norm: float
) -> str | None:
    """Why ``update`` may not be aggregated into ``reference`` (None when it may)."""
    if len(update) != len(reference):
        return f"{len(update)} arrays instead of the model's {len(reference)}"
    for index, (new, old) in enumerate(zip(update, reference, strict=True)):
        if new.shape != old.shape or new.dtype != old.dtype:
            return (
                f"array {index} is {new.dtype}{list(new.shape)}, "
                f"the model's is {old.dtype}{list(old.shape)}"
            )
    for index, new in enumerate(update):
        if not np.all(np.isfinite(new)):
            return f"array {index} contains NaN or Inf"
    if max_update_norm > 0.0:
        norm = update_norm(update, reference)
        if norm > max_update_norm:
            return f"update norm {norm:.4g} exceeds `max-update-norm` {max_update_norm:g}"
    return None


def reply_problem(
    content: RecordDict, reference: ArrayRecord, max_update_norm: float, weight_key: str
) -> str | None:
    """Why a training reply's content may not be aggregated (None when it may)."""
    if len(content.array_records) != 1:
        return f"{len(content.array_records)} array records instead of one"
    arrays = next(iter(content.array_records.values()))
    if list(arrays.keys()) != list(reference.keys()):
        return "array names differ from the model's"
    if len(content.metric_records) != 1:
        return f"{len(content.metric_records)} metric records instead of one"
    weight = next(iter(content.metric_records.values())).get(weight_key)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight <= 0
    ):
        return f"metric `{weight_key}` is not a positive number"
    return array_problem(arrays.to_numpy_ndarrays(), reference.to_numpy_ndarrays(), max_update_norm)


def keep_dtypes(arrays: ArrayRecord, reference: ArrayRecord) -> ArrayRecord:
    """``arrays`` cast to ``reference``'s dtypes where the names match.

    Flower's FedAdam / FedYogi multiply float32 weights by a float64 scalar, which NumPy 2
    promotes to float64; hospitals train and reply in float32, so a float64 global model
    would make every later update look malformed.
    """
    dtypes = {key: array.numpy().dtype for key, array in reference.items()}
    if all(
        dtypes.get(key, array.numpy().dtype) == array.numpy().dtype for key, array in arrays.items()
    ):
        return arrays
    return ArrayRecord(
        {
            key: Array(np.asarray(array.numpy(), dtype=dtypes.get(key, array.numpy().dtype)))
            for key, array in arrays.items()
        }
    )


class ValidatingStrategy(Strategy):
    """Wrap ``strategy`` so only valid training replies reach its aggregation.

    The aggregate keeps the global model's dtypes (see :func:`keep_dtypes`).

    When fewer than ``min_valid_replies`` replies remain, nothing is aggregated (the
    wrapped strategy's state is left untouched) and ``aggregate_train`` returns
    ``(None, None)``.
    """

    def __init__(
        self,
        strategy: Strategy,
        max_update_norm: float,
        min_valid_replies: int,
        weight_key: str = "num-examples",
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.max_update_norm = max_update_norm
        self.min_valid_replies = min_valid_replies
        self.weight_key = weight_key
        self.current_arrays = ArrayRecord()
        self.rejections: dict[int, list[Rejection]] = {}

    def __repr__(self) -> str:
        return f"ValidatingStrategy({self.strategy!r})"

    def summary(self) -> None:
        log(INFO, "\t├──> Update validation: shapes, dtypes, finite values")
        log(INFO, "\t│\t└── Max update norm: %s", self.max_update_norm or "off")
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current_arrays = arrays
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept: list[Message] = []
        rejected: list[Rejection] = []
        for reply in replies:
            if reply.has_error():
                kept.append(reply)  # the wrapped strategy logs and skips errors
                continue
            problem = reply_problem(
                reply.content, self.current_arrays, self.max_update_norm, self.weight_key
            )
            if problem is None:
                kept.append(reply)
                continue
            node = reply.metadata.src_node_id
            log(WARNING, "Round %d: rejected update from node %d: %s", server_round, node, problem)
            rejected.append(Rejection(node_id=node, reason=problem))
        self.rejections[server_round] = rejected
        valid = sum(1 for reply in kept if not reply.has_error())
        if valid < self.min_valid_replies:
            return None, None
        arrays, metrics = self.strategy.aggregate_train(server_round, kept)
        return (None if arrays is None else keep_dtypes(arrays, self.current_arrays)), metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

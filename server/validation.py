"""Reply validation: a strategy wrapper that lets only valid replies reach Flower's strategy.

Like Flower's differential-privacy wrappers, :class:`ValidatingStrategy` wraps any
strategy. Before the wrapped ``aggregate_train`` / ``aggregate_evaluate`` runs it drops
every reply that breaks the message contract (:func:`common.contract.reply_violations`:
record names, array names / shapes / dtypes, exact metric keys, scalar metrics, a
positive ``num-examples``, the ``site`` record) and, for training, every update that
holds NaN or Inf or — when ``max_update_norm`` > 0 — moves the model farther than that
(L2 norm over all arrays), or — under hospital-level DP — farther than ``dp-clip-norm``
(the hospital did not clip it). So no reply can make Flower's aggregation or its
``validate_message_reply_consistency`` raise. Each rejection is kept, with a readable
reason, in :meth:`ValidatingStrategy.rejected` for the round loop to record and log.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common.contract import ARRAYS_KEY, reply_violations

ReplyTamper = Callable[[int, Sequence[Message], ArrayRecord], list[Message]]
"""``(round, train replies, global model) → replies``: a simulation's attackers
(:mod:`server.adversaries`), applied before validation."""


def update_norm(update: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """L2 norm of ``update - reference`` over all arrays together (float64)."""
    total = 0.0
    for new, old in zip(update, reference, strict=True):
        delta = new.astype(np.float64) - old.astype(np.float64)
        total += float(np.sum(delta * delta))
    return math.sqrt(total)


CLIP_RELATIVE_SLACK = 1e-6


def clip_limit(update: list[np.ndarray], clip_norm: float) -> float:
    """The largest norm a clipped update may show: ``clip_norm`` plus its float rounding.

    A hospital clips ``new - old`` and sends ``old + clipped`` in the model's dtype; adding
    rounds each weight by at most one unit in the last place of the sent value, and the
    subtraction and scaling round by a relative 2^-23 or less.
    """
    spacing = math.sqrt(
        sum(float(np.sum(np.spacing(np.abs(a)).astype(np.float64) ** 2)) for a in update)
    )
    return clip_norm * (1.0 + CLIP_RELATIVE_SLACK) + spacing


def update_problem(
    arrays: ArrayRecord, reference: ArrayRecord, max_update_norm: float, clip_norm: float = 0.0
) -> str | None:
    """Why an update laid out like ``reference`` may not be aggregated (None when it may).

    ``clip_norm`` > 0 (hospital-level DP): the hospital must have clipped its update to it,
    else the noise would not cover what its update reveals.
    """
    update: list[np.ndarray] = []
    for name, array in arrays.items():
        try:
            values = array.numpy()
        except Exception as err:  # malformed bytes must not end the run
            return f"array `{name}` cannot be read ({type(err).__name__})"
        if not np.all(np.isfinite(values)):
            return f"array `{name}` contains NaN or Inf"
        update.append(values)
    if max_update_norm <= 0.0 and clip_norm <= 0.0:
        return None
    norm = update_norm(update, reference.to_numpy_ndarrays())
    if max_update_norm > 0.0 and norm > max_update_norm:
        return f"update norm {norm:.4g} exceeds `max-update-norm` {max_update_norm:g}"
    if clip_norm > 0.0 and norm > clip_limit(update, clip_norm):
        return (
            f"update norm {norm:.4g} exceeds `dp-clip-norm` {clip_norm:g} (hospital-level DP "
            "needs every hospital to clip its update: Flower's fixedclipping_mod)"
        )
    return None


def reply_problem(
    message_type: str,
    content: RecordDict,
    reference: ArrayRecord,
    max_update_norm: float,
    dp: str = "off",
    clip_norm: float = 0.0,
) -> str | None:
    """Why a ``message_type`` reply may not reach the strategy (None when it may).

    ``reference`` is the model the request carried; a train reply's arrays must match it.
    ``dp`` is the run's DP mode (record-level DP replies carry ``epsilon``).
    """
    problems = reply_violations(message_type, content, reference, dp=dp)
    if problems:
        return "; ".join(problems)
    if message_type == MessageType.TRAIN:
        arrays = content.array_records[ARRAYS_KEY]
        return update_problem(arrays, reference, max_update_norm, clip_norm)
    return None


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
    """Wrap ``strategy`` so only valid train and evaluate replies reach it.

    ``dp`` is the run's DP mode (the contract of a record-level DP train reply differs);
    ``clip_norm`` > 0 rejects updates a hospital did not clip to it (hospital-level DP).
    ``tamper`` (simulations only) rewrites the train replies before they are validated.

    Error replies pass through (the wrapped strategy logs and skips them). When fewer
    than ``min_valid_replies`` valid training replies remain, nothing is aggregated (the
    wrapped strategy's state is left untouched) and ``aggregate_train`` returns
    ``(None, None)``. The aggregate keeps the global model's dtypes (:func:`keep_dtypes`).
    """

    def __init__(
        self,
        strategy: Strategy,
        max_update_norm: float,
        min_valid_replies: int,
        *,
        dp: str = "off",
        clip_norm: float = 0.0,
        tamper: ReplyTamper | None = None,
    ) -> None:
        super().__init__()
        self.tamper = tamper
        self.strategy = strategy
        self.max_update_norm = max_update_norm
        self.min_valid_replies = min_valid_replies
        self.dp = dp
        self.clip_norm = clip_norm
        self.current_arrays = ArrayRecord()
        self._rejected: dict[tuple[int, str], dict[int, str]] = {}
        self._norms: dict[int, dict[int, float]] = {}

    def __repr__(self) -> str:
        return f"ValidatingStrategy({self.strategy!r})"

    def summary(self) -> None:
        """Flower's abstract hook (its ``start`` calls it; our loop does not)."""
        self.strategy.summary()

    def rejected(self, server_round: int, message_type: str) -> dict[int, str]:
        """Node id → reason, for every reply of that round and phase that was left out."""
        return dict(self._rejected.get((server_round, message_type), {}))

    def update_norms(self, server_round: int) -> dict[int, float]:
        """Node id → L2 distance of its accepted update from that round's global model
        (what ``max-update-norm`` bounds: read it off clean rounds to calibrate the bound)."""
        return dict(self._norms.get(server_round, {}))

    def _keep_valid(
        self, server_round: int, message_type: str, replies: Iterable[Message]
    ) -> list[Message]:
        kept: list[Message] = []
        rejected: dict[int, str] = {}
        for reply in replies:
            if reply.has_error():
                kept.append(reply)
                continue
            problem = reply_problem(
                message_type,
                reply.content,
                self.current_arrays,
                self.max_update_norm,
                dp=self.dp,
                clip_norm=self.clip_norm,
            )
            if problem is None:
                kept.append(reply)
            else:
                rejected[reply.metadata.src_node_id] = problem
        self._rejected[(server_round, message_type)] = rejected
        if message_type == MessageType.TRAIN:
            reference = self.current_arrays.to_numpy_ndarrays()
            self._norms[server_round] = {
                reply.metadata.src_node_id: update_norm(
                    reply.content.array_records[ARRAYS_KEY].to_numpy_ndarrays(), reference
                )
                for reply in kept
                if not reply.has_error()
            }
        return kept

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current_arrays = arrays
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.tamper is not None:
            replies = self.tamper(server_round, list(replies), self.current_arrays)
        kept = self._keep_valid(server_round, MessageType.TRAIN, replies)
        if sum(1 for reply in kept if not reply.has_error()) < self.min_valid_replies:
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
        kept = self._keep_valid(server_round, MessageType.EVALUATE, replies)
        return self.strategy.aggregate_evaluate(server_round, kept)

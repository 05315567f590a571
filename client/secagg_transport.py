"""What leaves a hospital under SecAgg+: the reply guard and the compact masked upload.

:func:`secagg_reply_guard` (outside ``secaggplus_mod``) lets a reply to a SecAgg+ request
leave only with Flower's SecAgg+ records and no array: no unmasked update leaves the site.
:func:`compact_masked_vectors` sends the masked vector as uint32 instead of Flower's int64.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from common.errors import RunError

FITRES_RECORDS: tuple[str, ...] = (
    "fitres.parameters",
    "fitres.num_examples",
    "fitres.metrics",
    "fitres.status",
)
"""What Flower's legacy ``fitres`` layout holds (``recorddict_compat.fitres_to_recorddict``)."""
SECAGG_REPLY_RECORDS: tuple[str, ...] = (RECORD_KEY_CONFIGS, *FITRES_RECORDS)
"""The only records a reply to a SecAgg+ request may hold (``fitres.*`` at collect only)."""
MASKED_MODULUS = 2**32
"""Flower's ``modulus_range`` (fixed by the coordinator): masked entries lie in [0, 2**32)."""


class UnmaskedReplyError(RunError):
    """A reply to a SecAgg+ request would carry arrays or records it may not."""

    public_reason = "SecAgg+ reply blocked before leaving the site: unmasked content"


def is_secagg_train(msg: Message) -> bool:
    """A train message of Flower's SecAgg+ protocol (any stage)."""
    return (
        msg.metadata.message_type == MessageType.TRAIN
        and RECORD_KEY_CONFIGS in msg.content.config_records
    )


def secagg_reply_problems(content: RecordDict) -> list[str]:
    """Why a reply to a SecAgg+ request may not leave (empty: it may)."""
    problems = [
        f"array record `{name}` is not empty"
        for name, record in content.array_records.items()
        if len(record) > 0
    ]
    found = [*content.array_records, *content.metric_records, *content.config_records]
    problems += [
        f"unexpected record `{name}`" for name in found if name not in SECAGG_REPLY_RECORDS
    ]
    if RECORD_KEY_CONFIGS not in content.config_records:
        problems.append(f"record `{RECORD_KEY_CONFIGS}` is missing")
    return problems


def secagg_reply_guard(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Outside ``secaggplus_mod``: a SecAgg+ reply leaves only masked (no array at all)."""
    secagg = is_secagg_train(msg)
    reply = call_next(msg, context)
    if secagg and not reply.has_error():
        problems = secagg_reply_problems(reply.content)
        if problems:
            raise UnmaskedReplyError("SecAgg+ reply blocked: " + "; ".join(problems))
    return reply


def _recode_masked(
    record: ConfigRecord, dtype: type[np.unsignedinteger[Any] | np.signedinteger[Any]]
) -> None:
    vectors = record.get(Key.MASKED_PARAMETERS)
    if not isinstance(vectors, list) or not all(isinstance(v, bytes) for v in vectors):
        return
    arrays = [bytes_to_ndarray(cast(bytes, v)) for v in vectors]
    if not all(a.size == 0 or (a.min() >= 0 and a.max() < MASKED_MODULUS) for a in arrays):
        return  # not reduced mod 2**32: left as Flower made it
    record[Key.MASKED_PARAMETERS] = [ndarray_to_bytes(a.astype(dtype)) for a in arrays]


def compact_masked_vectors(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Outside ``secaggplus_mod``: send the masked vector as uint32 instead of int64.

    Every entry is already reduced mod 2**32 (Flower's ``modulus_range``), so this is
    lossless and halves the upload. Flower's workflow sums the vectors and reduces them
    with a bit mask, which gives the same result on uint32 (the sum wraps mod 2**32);
    :func:`widen_masked_vectors` restores int64 on the coordinator all the same.
    """
    reply = call_next(msg, context)
    if is_secagg_train(msg) and not reply.has_error():
        record = reply.content.config_records.get(RECORD_KEY_CONFIGS)
        if record is not None:
            _recode_masked(record, np.uint32)
    return reply


def widen_masked_vectors(replies: Iterable[Message]) -> list[Message]:
    """Coordinator side: the masked vectors of SecAgg+ replies back to int64, in place (the
    dtype Flower's ``secaggplus_mod`` produces); other replies untouched."""
    replies = list(replies)
    for reply in replies:
        if reply.has_error():
            continue
        record = reply.content.config_records.get(RECORD_KEY_CONFIGS)
        if record is not None:
            _recode_masked(record, np.int64)
    return replies

"""SecAgg+ on the hospital: Flower's ``secaggplus_mod`` around the unchanged train handler.

:func:`secure_aggregation` is a router: a train message that carries Flower's
``secaggplus_configs`` record goes through Flower's ``secaggplus_mod`` and then
:func:`legacy_train_bridge`; every other message (a plain train request, any evaluate
request) passes straight through, so one ClientApp serves both modes.

``secaggplus_mod`` answers the key stages (setup, share_keys, unmask) itself and calls the
chain inside it only at ``collect_masked_vectors``, with Flower's legacy ``fitins.*``
layout. The bridge turns that into the contract's train request (``arrays`` named with
:data:`~common.secure_aggregation.ARRAY_NAMES_KEY`, ``config`` without the SecAgg+ keys),
lets the inner chain (``only_weights_leave``, the simulator's faults, hospital-level
clipping, the train handler) run once, and returns a legacy ``fitres`` holding the
*scaled update* ``scale · (returned − received)``: clip, then delta, then mask. Flower clips
values to ±clipping-range silently; the bridge refuses (:class:`SaturationError`) before
anything is masked when the weighted, scaled update would use more than
:data:`~common.secure_aggregation.SATURATION_LIMIT` of that range.

:func:`secagg_reply_guard` (outside ``secaggplus_mod``) lets a reply to a SecAgg+ request
leave only with Flower's SecAgg+ records and no array: no unmasked update leaves the site.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    FitRes,
    Scalar,
    Status,
    bytes_to_ndarray,
    ndarray_to_bytes,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
)
from flwr.compat.common import recorddict_compat as compat

from common.contract import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY, SITE_KEY, WEIGHT_KEY
from common.errors import RunError, invalid_value
from common.secure_aggregation import (
    ARRAY_NAMES_KEY,
    MAX_WEIGHT_KEY,
    RANGE_USE_KEY,
    SATURATION_LIMIT,
    SCALE_KEY,
    SECAGG_CONFIG_KEYS,
    range_use,
)

FITINS_PARAMETERS = "fitins.parameters"
FITINS_CONFIG = "fitins.config"
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


class SaturationError(RunError):
    """The weighted, scaled update would use too much of SecAgg+'s clipping range."""

    public_reason = "update refused before masking: it would saturate the SecAgg+ range"


class NonFiniteUpdateError(RunError):
    """The update holds NaN or an infinity: it cannot be quantized."""

    public_reason = "update refused before masking: it is not finite"


class SecAggRequestError(RunError):
    """A SecAgg+ train request without the settings the bridge needs."""

    public_reason = "SecAgg+ train request refused: settings missing or invalid"


class SecAggTrainError(RunError):
    """The train handler (or a mod inside the bridge) replied with an error."""

    public_reason = "training failed under SecAgg+"


class UnmaskedReplyError(RunError):
    """A reply to a SecAgg+ request would carry arrays or records it may not."""

    public_reason = "SecAgg+ reply blocked before leaving the site: unmasked content"


def is_secagg_train(msg: Message) -> bool:
    """A train message of Flower's SecAgg+ protocol (any stage)."""
    return (
        msg.metadata.message_type == MessageType.TRAIN
        and RECORD_KEY_CONFIGS in msg.content.config_records
    )


def _number(config: ConfigRecord, key: str) -> float:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SecAggRequestError(invalid_value(key, "a number > 0 in the train config", value))
    return float(value)


def _array_names(config: ConfigRecord, count: int) -> list[str]:
    names = config.get(ARRAY_NAMES_KEY)
    valid = isinstance(names, list) and all(isinstance(name, str) for name in names)
    if not valid or len(cast(list[str], names)) != count or len(set(names)) != count:  # type: ignore[arg-type]
        raise SecAggRequestError(
            invalid_value(ARRAY_NAMES_KEY, f"{count} distinct array names", names)
        )
    return cast(list[str], names)


def _protocol_setting(context: Context, key: str) -> float:
    """A setting ``secaggplus_mod`` stored at setup (what it applies when masking)."""
    state = context.state.config_records.get(RECORD_KEY_STATE, ConfigRecord())
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SecAggRequestError(f"SecAgg+ `{key}` is not set up on this node ({value!r}).")
    return float(value)


def contract_request(msg: Message) -> tuple[Message, list[np.ndarray], ConfigRecord]:
    """The contract's train request for a collect-stage ``fitins.*`` message, the received
    arrays (in the order of their names), and the full fitins config (SecAgg+ keys
    included)."""
    # Flower's recorddict_to_fitins refuses list values (the array names): read the records
    parameters = msg.content.array_records.get(FITINS_PARAMETERS)
    config = msg.content.config_records.get(FITINS_CONFIG)
    if parameters is None or config is None:
        raise SecAggRequestError(
            f"The SecAgg+ train request has no `{FITINS_PARAMETERS}` or `{FITINS_CONFIG}`."
        )
    received = parameters_to_ndarrays(compat.arrayrecord_to_parameters(parameters, True))
    names = _array_names(config, len(received))
    train_config = {k: v for k, v in config.items() if k not in SECAGG_CONFIG_KEYS}
    content = RecordDict(
        {
            ARRAYS_KEY: ArrayRecord({n: Array(a) for n, a in zip(names, received, strict=True)}),
            CONFIG_KEY: ConfigRecord(train_config),
        }
    )
    inner = copy.copy(msg)  # a ClientApp cannot build an instruction message (no task id)
    inner.content = content
    return inner, received, config


def scaled_update(
    received: Sequence[np.ndarray], returned: Sequence[np.ndarray], scale: float
) -> list[np.ndarray]:
    """``scale · (returned − received)`` per array, in float64 (no rounding before masking)."""
    return [
        scale * (np.asarray(new, np.float64) - np.asarray(old, np.float64))
        for old, new in zip(received, returned, strict=True)
    ]


def check_range(update: Sequence[np.ndarray], weight_ratio: float, clipping_range: float) -> float:
    """The update's range use (scale already applied); refused when not finite or above
    :data:`SATURATION_LIMIT`."""
    use = range_use(update, weight_ratio, 1.0, clipping_range)
    if not math.isfinite(use):
        raise NonFiniteUpdateError("The update holds NaN or an infinity; nothing is masked.")
    if use > SATURATION_LIMIT:
        raise SaturationError(
            f"The update would use {use:.3g} of ±{clipping_range:g} (limit "
            f"{SATURATION_LIMIT:g}); Flower would clip it silently, so nothing is masked."
        )
    return use


def legacy_train_bridge(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Inside ``secaggplus_mod``: run the contract's train chain once, reply a legacy
    ``fitres`` with the scaled update (never more than the saturation limit)."""
    inner, received, config = contract_request(msg)
    scale = _number(config, SCALE_KEY)
    max_weight = _protocol_setting(context, "max_weight")
    if MAX_WEIGHT_KEY in config and _number(config, MAX_WEIGHT_KEY) != max_weight:
        raise SecAggRequestError(
            invalid_value(
                MAX_WEIGHT_KEY, f"SecAgg+'s max_weight {max_weight:g}", config.get(MAX_WEIGHT_KEY)
            )
        )
    reply = call_next(inner, context)
    if reply.has_error():
        raise SecAggTrainError(f"The train chain replied an error: {reply.error.reason}")
    names = list(inner.content.array_records[ARRAYS_KEY])
    returned_record = reply.content.array_records[ARRAYS_KEY]
    returned = [returned_record[name].numpy() for name in names]
    metrics = reply.content.metric_records[METRICS_KEY]
    hospital_dp = context.run_config.get("dp", "off") == "hospital"
    weight = 1 if hospital_dp else int(cast(int, metrics[WEIGHT_KEY]))
    update = scaled_update(received, returned, scale)
    use = check_range(update, weight / max_weight, _protocol_setting(context, "clipping_range"))
    fit_metrics: dict[str, Scalar] = {
        **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
        RANGE_USE_KEY: use,
        **{k: str(v) for k, v in reply.content.config_records[SITE_KEY].items()},
    }
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), weight, fit_metrics)
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


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


def secure_aggregation(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """SecAgg+ train messages: Flower's ``secaggplus_mod`` then :func:`legacy_train_bridge`;
    anything else passes straight through."""
    if not is_secagg_train(msg):
        return call_next(msg, context)

    def bridge(inner: Message, ctx: Context) -> Message:
        return legacy_train_bridge(inner, ctx, call_next)

    return secaggplus_mod(msg, context, bridge)


__all__ = [
    "FITRES_RECORDS",
    "SaturationError",
    "compact_masked_vectors",
    "is_secagg_train",
    "legacy_train_bridge",
    "secagg_reply_guard",
    "secure_aggregation",
    "widen_masked_vectors",
]

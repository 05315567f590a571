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

What then leaves the site is checked by :mod:`client.secagg_transport`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    FitRes,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_STATE,
)
from flwr.compat.common import recorddict_compat as compat

from client.secagg_transport import is_secagg_train
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


def secure_aggregation(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """SecAgg+ train messages: Flower's ``secaggplus_mod`` then :func:`legacy_train_bridge`;
    anything else passes straight through."""
    if not is_secagg_train(msg):
        return call_next(msg, context)

    def bridge(inner: Message, ctx: Context) -> Message:
        return legacy_train_bridge(inner, ctx, call_next)

    return secaggplus_mod(msg, context, bridge)


__all__ = ["SaturationError", "legacy_train_bridge", "secure_aggregation"]

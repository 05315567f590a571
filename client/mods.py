"""Client-side mods: what a hospital enforces on every message, around the ClientApp.

``contain_errors`` keeps exception details (file names, stack traces) inside the
hospital: the server only learns the kind of failure. ``only_weights_leave`` checks every
reply before it leaves: arrays shaped like the global model it received plus scalar
metrics, nothing else; a reply that breaks the rule is replaced by an error.
"""

from __future__ import annotations

import traceback
from logging import ERROR

from flwr.app import Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import log
from flwr.common.constant import ErrorCode

from common.errors import ConfigError, FedclinicError


def contain_errors(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    try:
        return call_next(msg, context)
    except Exception as err:
        log(
            ERROR,
            "ClientApp failed on %s message:\n%s",
            msg.metadata.message_type,
            traceback.format_exc(),
        )
        return Message(
            Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, _public_reason(err)), reply_to=msg
        )


def _public_reason(err: Exception) -> str:
    """What the server may learn: config problems in full, data problems by kind only."""
    if isinstance(err, ConfigError):
        return str(err)
    if isinstance(err, FedclinicError):
        return f"{type(err).__name__}: the site's data failed validation (details in the site log)"
    return f"{type(err).__name__} in the ClientApp (details in the site log)"


def reply_violations(request: Message, reply: Message) -> list[str]:
    """Why ``reply`` may not leave the hospital (empty when it may)."""
    content = reply.content
    problems = [f"config record `{key}` in reply" for key in content.config_records]
    if len(content.metric_records) != 1:
        problems.append(f"expected one metric record, found {len(content.metric_records)}")
    for key, metrics in content.metric_records.items():
        problems.extend(
            f"metric `{key}.{name}` is not a scalar"
            for name, value in metrics.items()
            if not isinstance(value, int | float) or isinstance(value, bool)
        )
    expected = request.content.array_records
    if msg_type_is_train(request):
        if list(content.array_records) != list(expected):
            problems.append(f"array records {list(content.array_records)} != {list(expected)}")
        for key, record in content.array_records.items():
            sent = expected.get(key)
            if sent is None:
                continue
            if [(a.shape, a.dtype) for a in record.values()] != [
                (a.shape, a.dtype) for a in sent.values()
            ]:
                problems.append(f"arrays in `{key}` differ in shape or dtype from the model's")
    elif content.array_records:
        problems.append("arrays in an evaluate reply")
    return problems


def msg_type_is_train(msg: Message) -> bool:
    return msg.metadata.message_type == MessageType.TRAIN


def only_weights_leave(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    problems = reply_violations(msg, reply)
    if problems:
        log(ERROR, "Reply blocked before leaving the site: %s", "; ".join(problems))
        return Message(
            Error(ErrorCode.MOD_FAILED_PRECONDITION, "reply blocked by only_weights_leave"),
            reply_to=msg,
        )
    return reply

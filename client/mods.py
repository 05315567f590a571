"""Client-side mods: what a hospital enforces on every message, around the ClientApp.

``contain_errors`` keeps exception details (file names, stack traces) inside the
hospital: the server only learns the kind of failure. ``only_weights_leave`` lets a reply
leave only when it is exactly what :mod:`common.contract` allows for its message type
(the received model's arrays, the declared metrics, the site record); any other reply,
error replies included, is replaced by an error that names only a kind. The details of
every failure and every blocked reply go to the site's own log.
"""

from __future__ import annotations

import traceback
from logging import ERROR

from flwr.app import Context, Error, Message, MessageType
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import log
from flwr.common.constant import ErrorCode

from common.contract import ARRAYS_KEY, reply_violations
from common.errors import FedclinicError

DETAILS = "details in the site log"
BLOCKED_REASON = f"Reply blocked before leaving the site ({DETAILS})"
ERROR_REPLY_REASON = f"Error reply from the ClientApp ({DETAILS})"


def public_reason(err: BaseException) -> str:
    """What the server may learn of ``err``: its kind, never its message."""
    public = getattr(err, "public_reason", None)
    if isinstance(public, str):
        return f"{public} ({DETAILS})"
    if isinstance(err, FedclinicError):
        return f"{type(err).__name__} ({DETAILS})"
    return f"{type(err).__name__} in the ClientApp ({DETAILS})"


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
            Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, public_reason(err)), reply_to=msg
        )


def leave_violations(request: Message, reply: Message, dp: object = "off") -> list[str]:
    """Why ``reply`` to ``request`` may not leave the hospital (empty when it may);
    ``dp`` is the run's ``dp`` setting (record-level DP adds ``epsilon``)."""
    message_type = request.metadata.message_type
    reference = request.content.array_records.get(ARRAYS_KEY)
    if message_type == MessageType.TRAIN and reference is None:
        return [f"the train request carried no `{ARRAYS_KEY}` record to compare with"]
    return reply_violations(message_type, reply.content, reference, dp=str(dp))


def only_weights_leave(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    reply = call_next(msg, context)
    if reply.has_error():
        log(ERROR, "Error reply kept in the site: %s", reply.error.reason)
        return Message(Error(reply.error.code, ERROR_REPLY_REASON), reply_to=msg)
    problems = leave_violations(msg, reply, context.run_config.get("dp", "off"))
    if problems:
        log(ERROR, "Reply blocked before leaving the site: %s", "; ".join(problems))
        return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, BLOCKED_REASON), reply_to=msg)
    return reply


def hospital_dp_clipping(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``fixedclipping_mod`` when the run uses hospital-level DP (train only)."""
    if context.run_config.get("dp") == "hospital":
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)

"""A thin link to a SuperNode's local Runtime API for a long-lived hospital executor.

Flower 1.42's SuperNode in ``--isolation process`` mode queues one task per message and
lets whoever signs ``AcquireTask`` with its ``--superexec-auth-secret-file`` take it. This
module wraps Flower's own client (:class:`flwr.supercore.runtime.RuntimeHttpClient`) and
interceptors, with a retry policy of its own: transport errors and 5xx answers are
retried, anything else is raised to the caller. Flower's ready-made helpers assume a
short-lived ``flwr-clientapp`` process (they signal their own process on a 401 or an
unacknowledged heartbeat), so none of them is used here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from flwr.app import Context, Message
from flwr.common.serde import context_from_proto, context_to_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node
from flwr.proto.runtime_pb2 import (
    AcquireTaskRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
    PushTaskOutputRequest,
    SendTaskHeartbeatRequest,
)
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, SuperExecAuthHttpInterceptor
from flwr.supercore.protobuf.client import (
    ProtobufCall,
    ProtobufClientInterceptor,
    ProtobufRequestContext,
)
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.runtime_version_compatibility import RuntimeVersionMetadata
from flwr.supercore.task_identity import TaskIdentity

from common.errors import FedclinicError

COMPONENT = "fedclinic-executor"
ACQUIRE_METHOD = "/flwr.proto.Runtime/AcquireTask"
MESSAGE_WAIT = 10.0  # seconds a task's message may take to appear after the task exists


class LinkError(FedclinicError):
    """The SuperNode's Runtime API refused the executor or could not be reached."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transport errors and 5xx answers ``tries`` times, backing off exponentially."""

    tries: int = 5
    base_delay: float = 0.2
    max_delay: int = 5

    def invoker(self) -> RetryInvoker:
        return RetryInvoker(
            lambda: exponential(self.base_delay, 2, self.max_delay),
            (httpx.TransportError, httpx.HTTPStatusError),
            max_tries=self.tries,
            max_time=None,
            should_giveup=lambda error: not retryable(error),
        )


def retryable(error: Exception) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code >= 500
    return isinstance(error, httpx.TransportError)


class VersionHeaders:
    """Announces this runtime's Flower version (as Flower's processes do), never exits."""

    def __init__(self) -> None:
        self._headers = dict(RuntimeVersionMetadata.from_local_component(COMPONENT).as_metadata())

    def intercept(self, context: ProtobufRequestContext, call_next: ProtobufCall) -> httpx.Response:
        context.request.headers.update(self._headers)
        return call_next(context)


@dataclass(frozen=True)
class AcquiredTask:
    task_id: int
    run_id: int
    token: str


@dataclass(frozen=True)
class TaskInput:
    """What the SuperNode gives a task before any code of its run could execute."""

    run: Run
    fab: Fab
    context: Context


class RuntimeLink:
    """Acquires tasks from a SuperNode; :meth:`task` opens the link of one task."""

    def __init__(
        self,
        address: str,
        secret: bytes,
        retry: RetryPolicy = RetryPolicy(),
        root_certificates: bytes | None = None,
    ) -> None:
        self.address = address
        self.retry = retry
        self.root_certificates = root_certificates
        auth = SuperExecAuthHttpInterceptor(
            master_secret=secret, protected_methods=frozenset({ACQUIRE_METHOD})
        )
        self._client = self._client_with([VersionHeaders(), auth])

    def acquire(self) -> AcquiredTask | None:
        """The oldest pending ClientApp task, claimed; None when there is none."""
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
        try:
            response = self._client.AcquireTask(request)
        except httpx.HTTPStatusError as error:
            code = error.response.status_code
            if code in (401, 403):
                raise LinkError(
                    f"The SuperNode at {self.address} refused the executor ({code}): "
                    "check `--secret-file` against its `--superexec-auth-secret-file`."
                ) from error
            raise
        if not response.HasField("task") or not response.token:
            return None
        return AcquiredTask(response.task.task_id, response.task.run_id, response.token)

    def task(self, acquired: AcquiredTask) -> TaskLink:
        client = self._client_with([VersionHeaders(), RuntimeTokenHttpInterceptor(acquired.token)])
        return TaskLink(client)

    def close(self) -> None:
        self._client.close()

    def _client_with(self, interceptors: Sequence[ProtobufClientInterceptor]) -> RuntimeHttpClient:
        return RuntimeHttpClient.from_server_address(
            server_address=self.address,
            insecure=self.root_certificates is None,
            root_certificates=self.root_certificates,
            interceptors=interceptors,
            retry_invoker=self.retry.invoker(),
        )


class TaskLink:
    """One claimed task: its inputs, its message, the reply and the task's outcome."""

    def __init__(self, client: RuntimeHttpClient) -> None:
        self.client = client

    def pull_input(self) -> TaskInput:
        response = self.client.PullTaskInput(PullTaskInputRequest())
        # Flower's messages read the current task's identity from these class attributes;
        # tasks run one at a time in the executor, as in Flower's own `flwr-clientapp`.
        TaskIdentity.task_id = response.task_id
        TaskIdentity.run_id = response.run.run_id
        TaskIdentity.node_id = response.context.node_id
        return TaskInput(
            run=run_from_proto(response.run),
            fab=fab_from_proto(response.fab),
            context=context_from_proto(response.context),
        )

    def pull_message(self, context: Context, wait: float = MESSAGE_WAIT) -> Message:
        """The task's message (downloaded, then confirmed); it may appear a moment late."""
        from flwr.supercore.inflatable.inflatable_protobuf_utils import (
            make_confirm_message_received_fn_protobuf,
            make_pull_object_fn_protobuf,
        )
        from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree

        deadline = time.monotonic() + wait
        response = self.client.PullMessages(PullAppMessagesRequest())
        while not response.messages_list and time.monotonic() < deadline:
            time.sleep(0.1)
            response = self.client.PullMessages(PullAppMessagesRequest())
        if not response.messages_list:
            raise LinkError(f"The SuperNode had no message for the task within {wait:g} s.")
        node = Node(node_id=context.node_id)
        tree = response.message_object_trees[0]
        message: Message = pull_and_inflate_object_from_tree(
            tree,
            make_pull_object_fn_protobuf(self.client.PullObject, node, context.run_id),
            make_confirm_message_received_fn_protobuf(
                self.client.ConfirmMessageReceived, node, context.run_id
            ),
            return_type=Message,
        )
        # The deflated message does not carry its own ID (its object ID).
        message.metadata.__dict__["_message_id"] = tree.object_id
        return message

    def push_reply(self, reply: Message, context: Context) -> None:
        from flwr.supernode.runtime.run_clientapp import push_message

        push_message(self.client, reply, context)

    def push_output(self, context: Context | None, sub_status: str, details: str) -> None:
        self.client.PushTaskOutput(
            PushTaskOutputRequest(
                context=context_to_proto(context) if context is not None else None,
                sub_status=sub_status,
                details=details,
            )
        )

    def heartbeat(self) -> bool:
        """True when the SuperNode still holds the task for us."""
        return bool(self.client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success)

    def close(self) -> None:
        self.client.close()

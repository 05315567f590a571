"""Flower's SecAgg+ in this process: ``SecAggPlusWorkflow`` against ``secaggplus_mod``.

:func:`secure_mean` runs one round's four stages (setup, share_keys,
collect_masked_vectors, unmask) through the coordinator's own driver and workflow subclass
(:mod:`server.secagg_workflow`) against one ClientApp per hospital (``secaggplus_mod`` in
front of a handler that answers with a given update), over :class:`WireGrid`: every message
crosses Flower's protobuf both ways, as on the wire, and is counted in bytes. Nothing of the
protocol is reimplemented here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    FitRes,
)
from flwr.serverapp import Grid
from flwr.supercore.run import Run

FIRST_NODE_ID = 101
COLLECT_STAGE = "collect_masked_vectors"
STAGE_TIMEOUT = 60.0  # every message is answered at once in this process
Update = list[np.ndarray]


@dataclass(frozen=True)
class SecAggSettings:
    """Flower's SecAgg+ parameters (fedclinic's defaults)."""

    clipping_range: float = 8.0
    quantization_range: int = 2**22
    num_shares: float = 1.0
    reconstruction_threshold: float = 0.67


@contextmanager
def task_identity() -> Iterator[None]:
    """Flower stamps instruction messages with the running task's identity, which only a
    ServerApp or ClientApp process has: one for this in-process round, restored after."""
    from flwr.supercore.task_identity import TaskIdentity

    previous = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = previous


class WireGrid(Grid):
    """Nodes ``101..`` answer through ``app`` in this process; every message crosses
    Flower's protobuf both ways (as on the wire) and its size is counted."""

    def __init__(self, app: ClientApp, hospitals: int) -> None:
        self.app = app
        self.contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=1,
                node_id=FIRST_NODE_ID + i,
                node_config={"partition-id": i, "num-partitions": hospitals},
                state=RecordDict(),
                run_config={},
            )
            for i in range(hospitals)
        }
        self.bytes = 0

    def set_run(self, run: Run) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Run:
        return Run.create_empty(run_id=1)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return [self._deliver(message) for message in messages]

    def _deliver(self, message: Message) -> Message:
        request = self._wire(message, fresh_id=True)
        try:
            reply = self.app(request, self.contexts[request.metadata.dst_node_id])
        except Exception as error:  # a failing hospital: an error reply
            reply = Message(Error(0, f"{type(error).__name__}: {error}"), reply_to=request)
        return self._wire(reply, fresh_id=False)

    def _wire(self, message: Message, fresh_id: bool) -> Message:
        from flwr.common.serde import message_from_proto, message_to_proto

        proto = message_to_proto(message)
        if fresh_id:
            proto.metadata.message_id = uuid.uuid4().hex
        self.bytes += proto.ByteSize()
        return message_from_proto(proto)


def hospitals_app(updates: Sequence[Update], weights: Sequence[float], drop: set[int]) -> ClientApp:
    """Hospital ``i`` (node ``101 + i``) answers the collect stage with its update; the
    ones in ``drop`` raise there instead."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Code, Status, ndarrays_to_parameters
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict

    def drop_at_collect(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        stage = None if configs is None else configs.get("stage")
        if stage == COLLECT_STAGE and int(context.node_config["partition-id"]) in drop:
            raise RuntimeError("dropped out after sharing keys")
        return call_next(msg, context)

    app = ClientApp(mods=[drop_at_collect, secaggplus_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        hospital = int(context.node_config["partition-id"])
        parameters = ndarrays_to_parameters(updates[hospital])
        fitres = FitRes(Status(Code.OK, ""), parameters, int(weights[hospital]), {})
        return Message(fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)

    return app


def secure_mean(
    updates: Sequence[Update],
    weights: Sequence[float],
    drop: set[int],
    settings: SecAggSettings,
    max_weight: float,
) -> tuple[Update | None, int]:
    """Flower's unmasked weighted mean of ``updates`` (None: halted) and the bytes sent,
    through the coordinator's own driver (:func:`server.secagg_workflow.run_secagg_workflow`)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord

    from server.secagg_workflow import FedclinicSecAggPlus, run_secagg_workflow

    grid = WireGrid(hospitals_app(updates, weights, drop), len(updates))
    workflow = FedclinicSecAggPlus(
        collect_timeout=STAGE_TIMEOUT,
        stage_timeout=STAGE_TIMEOUT,
        num_shares=settings.num_shares,
        reconstruction_threshold=settings.reconstruction_threshold,
        max_weight=max_weight,
        clipping_range=settings.clipping_range,
        quantization_range=settings.quantization_range,
    )
    model = ArrayRecord(
        {str(i): Array(np.zeros(a.shape, np.float32)) for i, a in enumerate(updates[0])}
    )  # the handler ignores it
    configs = {node_id: ConfigRecord() for node_id in grid.get_node_ids()}
    with task_identity():
        result = run_secagg_workflow(grid, workflow, 1, model, configs)
    return result.aggregate, grid.bytes

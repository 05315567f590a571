"""An in-memory Flower Grid whose nodes answer with plain functions: for fast loop tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

# A node's behaviour: the reply to a request, or None for no reply (a time-out).
Behaviour = Callable[[Message], Message | None]

EVALUATE_METRICS = {"accuracy": 0.5, "auc": 0.5, "sensitivity": 0.5, "specificity": 0.5}


def site_of(request: Message) -> ConfigRecord:
    """Node N calls itself ``site-N`` and trains on its own images."""
    return ConfigRecord(
        {"site-name": f"site-{request.metadata.dst_node_id}", "data-kind": "folder"}
    )


def answers(offset: float) -> Callable[[Message], Message]:
    """A hospital that moves every weight by ``offset`` and replies exactly as the contract
    says, with fixed metrics (its evaluate loss is ``offset``)."""

    def behaviour(request: Message) -> Message:
        if request.metadata.message_type == "train":
            received = request.content.array_records["arrays"].to_numpy_ndarrays()
            moved = [(a + np.float32(offset)).astype(a.dtype) for a in received]
            metrics = MetricRecord({"num-examples": 10, "loss": 0.5, "accuracy": 0.75})
            content = RecordDict(
                {"arrays": ArrayRecord(moved), "metrics": metrics, "site": site_of(request)}
            )
        else:
            metrics = MetricRecord({"num-examples": 5, "loss": offset, **EVALUATE_METRICS})
            content = RecordDict({"metrics": metrics, "site": site_of(request)})
        return Message(content=content, reply_to=request)

    return behaviour


class FakeGrid(Grid):
    def __init__(self, behaviours: dict[int, Behaviour], connected: int | None = None) -> None:
        self.behaviours = behaviours
        self.connected = len(behaviours) if connected is None else connected
        self.timeouts: list[float | None] = []

    def set_run(self, run: Run) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Run:
        raise NotImplementedError

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
        return sorted(self.behaviours)[: self.connected]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        self.timeouts.append(timeout)
        replies = [self.behaviours[m.metadata.dst_node_id](m) for m in messages]
        return [reply for reply in replies if reply is not None]

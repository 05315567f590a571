"""An in-memory Flower Grid whose nodes answer with plain functions: for fast loop tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

# A node's behaviour: the reply to a request, or None for no reply (a time-out).
Behaviour = Callable[[Message], Message | None]


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

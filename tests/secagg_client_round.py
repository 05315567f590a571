"""One SecAgg+ train round in process (no Ray): Flower's own ``SecAggPlusWorkflow`` drives
hospitals' ClientApps through a grid that sends every message through protobuf, as on the
wire. For the client tests; the legacy strategy only captures what the workflow hands it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import FitIns, FitRes, Parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid
from flwr.supercore.run import Run

RUN_ID = 1


def wire(message: Message) -> Message:
    """``message`` after a protobuf round trip (a fresh message id, as the SuperLink gives)."""
    proto = message_to_proto(message)
    if not proto.metadata.message_id:
        proto.metadata.message_id = uuid.uuid4().hex
    return message_from_proto(proto)


@dataclass
class Exchange:
    stage: str
    node: int
    reply: Message


class InProcessGrid(Grid):
    """Node ``n`` is ``app`` with its own persistent ``contexts[n]``; every exchange is kept."""

    def __init__(self, app: ClientApp, contexts: dict[int, Context]) -> None:
        self.app, self.contexts = app, contexts
        self.exchanges: list[Exchange] = []

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for message in messages:
            request = wire(message)
            stage = str(request.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
            node = request.metadata.dst_node_id
            try:
                reply = self.app(request, self.contexts[node])
            except Exception as err:  # a ClientApp that raises past its own mods
                reply = Message(Error(0, f"{type(err).__name__}: {err}"), reply_to=request)
            reply = wire(reply)
            self.exchanges.append(Exchange(stage, node, reply))
            replies.append(reply)
        return replies

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.contexts)

    @property
    def run(self) -> Run:
        return Run.create_empty(RUN_ID)

    def set_run(self, run: Run) -> None:
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError


class CapturingStrategy(Strategy):
    """The legacy strategy the workflow needs: send ``fitins`` to every node, keep results."""

    def __init__(self, grid: Grid, fitins: FitIns) -> None:
        self.grid, self.fitins = grid, fitins
        self.results: dict[int, FitRes] = {}
        self.aggregate: Parameters | None = None

    def initialize_parameters(self, client_manager: Any) -> None:
        return None

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
        nodes = self.grid.get_node_ids()
        return [(GridClientProxy(n, self.grid, RUN_ID), self.fitins) for n in nodes]

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        self.results = {proxy.node_id: res for proxy, res in results}
        self.aggregate = results[0][1].parameters if results else None
        return self.aggregate, {}

    def configure_evaluate(self, *args: Any) -> list[Any]:
        return []

    def aggregate_evaluate(self, *args: Any) -> Any:
        return None, {}

    def evaluate(self, *args: Any) -> None:
        return None


@dataclass
class SecureRound:
    aggregate: list[np.ndarray] | None
    results: dict[int, FitRes]
    exchanges: list[Exchange] = field(default_factory=list)


def secure_round(
    grid: InProcessGrid,
    weights: dict[str, np.ndarray],
    config: dict[str, Any],
    *,
    max_weight: float,
    clipping_range: float = 8.0,
) -> SecureRound:
    """Round 1 of Flower's workflow over every node of ``grid`` (fitins = ``weights`` +
    ``config``); the unmasked weighted mean of what the hospitals sent, if it completed."""
    arrays = ArrayRecord({name: Array(value) for name, value in weights.items()})
    fitins = FitIns(compat.arrayrecord_to_parameters(arrays, keep_input=True), config)
    strategy = CapturingStrategy(grid, fitins)
    private = Context(run_id=RUN_ID, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(private, strategy=strategy, client_manager=SimpleClientManager())
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = arrays
    workflow = SecAggPlusWorkflow(
        num_shares=1.0,
        reconstruction_threshold=0.67,
        max_weight=max_weight,
        clipping_range=clipping_range,
    )
    workflow(grid, legacy)
    aggregate = None if strategy.aggregate is None else parameters_to_ndarrays(strategy.aggregate)
    return SecureRound(aggregate, strategy.results, grid.exchanges)

"""In-process SecAgg+ fakes (no Ray): a grid whose nodes run Flower's real ``secaggplus_mod``.

:class:`SecAggGrid` sends every message through Flower's protobuf (as on the wire) to its
destination node, which keeps its own ``Context`` across stages and rounds. A node answers
train messages through ``secaggplus_mod`` around a toy *legacy* train handler
(:func:`toy_train`) that sends a known update: ``scale · Δ_i`` (float64), with
``num-examples`` ``n_i`` and the plaintext metrics the coordinator's contract expects; it
answers evaluate requests with a contract reply. :class:`Fault` makes a node raise (an error
reply) or stay silent (a timeout) at one SecAgg+ stage.
"""

from __future__ import annotations

import types
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from common.secure_aggregation import MAX_WEIGHT_KEY, RANGE_USE_KEY, SCALE_KEY, range_use

SHAPES: tuple[tuple[int, ...], ...] = ((3, 3, 1, 4), (4,), (50, 2), (2,))
DATA_KIND = "simulated-synthetic"


def start_arrays() -> list[np.ndarray]:
    """A small float32 model (zeros, so adding an update adds no float32 rounding of w)."""
    return [np.zeros(shape, np.float32) for shape in SHAPES]


def num_examples(node_id: int) -> int:
    """Unequal sizes, so weighting matters."""
    return 120 + 60 * (node_id % 10)


def update_of(node_id: int, shapes: Iterable[tuple[int, ...]] = SHAPES) -> list[np.ndarray]:
    """Hospital ``node_id``'s known update Δ (float64, Keras-like magnitude ~1e-3)."""
    rng = np.random.default_rng(node_id)
    return [rng.normal(0.0, 1e-3, shape) + 0.002 * (node_id % 10 - 2) for shape in shapes]


def weighted_mean(node_ids: Iterable[int]) -> list[np.ndarray]:
    """The oracle: plain FedAvg of those hospitals' updates, weighted by ``num-examples``."""
    ids = list(node_ids)
    total = sum(num_examples(n) for n in ids)
    updates = [update_of(n) for n in ids]
    return [
        np.sum([num_examples(n) * u[i] for n, u in zip(ids, updates, strict=True)], axis=0) / total
        for i in range(len(SHAPES))
    ]


def site_name(node_id: int) -> str:
    return f"hospital-{node_id}"


def toy_train(msg: Message, context: Context) -> Message:
    """The legacy train handler inside ``secaggplus_mod`` (stage collect_masked_vectors)."""
    # read the raw record: `compat.recorddict_to_fitins` refuses its list of array names
    config = msg.content.config_records["fitins.config"]
    node_id = context.node_id
    scale = float(config[SCALE_KEY])  # type: ignore[arg-type]
    max_weight = float(config[MAX_WEIGHT_KEY])  # type: ignore[arg-type]
    clip = float(context.state.config_records["secaggplus_state"]["clipping_range"])  # type: ignore[arg-type]
    n = num_examples(node_id)
    delta = update_of(node_id)
    metrics = {
        "loss": 0.5,
        "accuracy": 0.75,
        "num-examples": n,
        RANGE_USE_KEY: range_use(delta, n / max_weight, scale, clip),
        "site-name": site_name(node_id),
        "data-kind": DATA_KIND,
    }
    scaled = ndarrays_to_parameters([d * scale for d in delta])
    fitres = FitRes(Status(Code.OK, ""), scaled, n, metrics)  # type: ignore[arg-type]
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


def toy_evaluate(msg: Message, context: Context) -> Message:
    metrics: dict[str, Any] = {"num-examples": 5, "loss": 0.5, "accuracy": 0.5, "auc": 0.5}
    metrics |= {"sensitivity": 0.5, "specificity": 0.5}
    site = ConfigRecord({"site-name": site_name(context.node_id), "data-kind": DATA_KIND})
    return Message(RecordDict({"metrics": MetricRecord(metrics), "site": site}), reply_to=msg)


def stage_of(message: Message) -> str | None:
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    return None if configs is None else str(configs.get(Key.STAGE))


@dataclass(frozen=True)
class Fault:
    """Node ``node_id`` raises (``silent`` False) or never answers at ``stage``."""

    node_id: int
    stage: str
    silent: bool = False


@dataclass
class SecAggGrid(Grid):
    """Nodes ``node_ids`` answer as toy hospitals through Flower's ``secaggplus_mod``."""

    node_ids: Sequence[int] = (1, 2, 3, 4, 5)
    faults: Sequence[Fault] = ()
    contexts: dict[int, Context] = field(default_factory=dict)
    sent: list[Message] = field(default_factory=list)
    train: Callable[[Message, Context], Message] = toy_train

    def __post_init__(self) -> None:
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
            for n in self.node_ids
        }

    def _answer(self, wire: Message) -> Message | None:
        node_id, stage = wire.metadata.dst_node_id, stage_of(wire)
        fault = next((f for f in self.faults if (f.node_id, f.stage) == (node_id, stage)), None)
        if fault is not None and fault.silent:
            return None
        context = self.contexts[node_id]
        try:
            if fault is not None:
                raise RuntimeError(f"simulated dropout at {stage}")
            if wire.metadata.message_type == MessageType.TRAIN:
                return secaggplus_mod(wire, context, self.train)
            return toy_evaluate(wire, context)
        except Exception as err:
            return Message(Error(0, f"{type(err).__name__}: {err}"), reply_to=wire)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for message in messages:
            self.sent.append(message)
            proto = message_to_proto(message)
            proto.metadata.message_id = uuid.uuid4().hex
            reply = self._answer(message_from_proto(proto))
            if reply is not None:
                replies.append(message_from_proto(message_to_proto(reply)))
        return replies

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    @property
    def run(self) -> Run:
        return types.SimpleNamespace(run_id=1)  # type: ignore[return-value]

    def set_run(self, run: Run) -> None:
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

    def get_nodes(self) -> Iterable[NodeInfo]:
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

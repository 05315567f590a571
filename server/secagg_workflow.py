"""Flower's SecAgg+ workflow for one round's train phase, driven from our own loop.

Flower 1.42 offers SecAgg+ only as a legacy workflow (``SecAggPlusWorkflow`` with a
``LegacyContext`` and a legacy strategy). :func:`run_secagg_workflow` runs it for one
round, unchanged but for :class:`FedclinicSecAggPlus`'s two fixes, and returns what the
coordinator may learn: the unmasked weighted mean of the hospitals' (scaled) updates, each
contributor's plaintext ``num_examples`` and metrics, and what happened to every node at
every stage (:class:`RecordingGrid`; the workflow itself returns nothing per node).

* :class:`ShimStrategy` is the legacy strategy the workflow calls: ``configure_fit``
  returns the nodes and train configs our loop already sampled, ``aggregate_fit`` only
  captures the aggregate (the workflow puts the *same* unmasked ``Parameters`` into every
  ``FitRes``) and the plaintext per-node values.
* A private ``Context`` each round: the workflow writes into ``context.state``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, FitRes, Parameters, Scalar, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from server.grid_proxy import ProxyGrid
from server.round_record import destinations, replying_node
from server.train_phase import message_bytes

STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
MODULUS_RANGE = 2**32


class FedclinicSecAggPlus(SecAggPlusWorkflow):
    """Flower's workflow with a timeout per stage and tolerance of early dropouts.

    Training happens in ``collect_masked_vectors`` and a hospital's first message of a
    run (``setup``) may have to start its ClientApp, so both wait ``collect_timeout`` (the
    run's ``round-timeout``); the other key stages are cheap (``stage_timeout``).
    Upstream, a node that drops before masking (at ``setup`` or ``share_keys``) halts the
    round: ``unmask`` asks the survivors for its key share, which they never received
    (Flower 1.42 ``secaggplus_workflow.py`` 551-552, ``secaggplus_mod.py`` 510). Only nodes that
    distributed their shares can be in the sum, so after ``share_keys`` the sample and
    every neighbourhood shrink to them. The protocol itself is Flower's.
    """

    def __init__(self, *, collect_timeout: float, stage_timeout: float, **kwargs: Any) -> None:
        super().__init__(timeout=stage_timeout, modulus_range=MODULUS_RANGE, **kwargs)
        self.collect_timeout = collect_timeout
        self.stage_timeout = stage_timeout

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        self.timeout = self.collect_timeout
        return super().setup_stage(grid, context, state)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        self.timeout = self.stage_timeout
        ok = super().share_keys_stage(grid, context, state)
        shared = set(state.active_node_ids)
        state.sampled_node_ids = set(shared)
        state.nid_to_neighbours = {
            nid: neighbours & shared
            for nid, neighbours in state.nid_to_neighbours.items()
            if nid in shared
        }
        return ok and self._check_threshold(state)

    def collect_masked_vectors_stage(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        self.timeout = self.collect_timeout
        return super().collect_masked_vectors_stage(grid, context, state)

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        self.timeout = self.stage_timeout
        return super().unmask_stage(grid, context, state)


class ShimStrategy(LegacyStrategy):
    """The legacy strategy inside the workflow: hands out our sample, captures the sum."""

    def __init__(self, grid: Grid, instructions: Mapping[int, FitIns]) -> None:
        self.grid = grid
        self.instructions = dict(instructions)
        self.aggregate: Parameters | None = None
        self.contributors: dict[int, tuple[int, dict[str, Scalar]]] = {}

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        run_id = self.grid.run.run_id
        return [
            (GridClientProxy(node_id, self.grid, run_id), fitins)
            for node_id, fitins in self.instructions.items()
        ]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        self.contributors = {
            proxy.node_id: (res.num_examples, dict(res.metrics)) for proxy, res in results
        }
        if results:  # the same unmasked aggregate in every FitRes
            self.aggregate = results[0][1].parameters
        return self.aggregate, {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[Any]:
        return []

    def aggregate_evaluate(
        self, server_round: int, results: list[Any], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return None


@dataclass(frozen=True)
class StageRecord:
    """One stage's exchange: each node's outcome (``ok`` / ``failed`` / ``timeout``), the
    error reasons, protobuf bytes sent and received, and the seconds it took."""

    stage: str
    outcomes: dict[int, str]
    reasons: dict[int, str]
    sent_bytes: int
    received_bytes: int
    seconds: float
    timeout: float | None


class RecordingGrid(ProxyGrid):
    """Delegates to ``grid``; records every SecAgg+ stage's per-node outcome and bytes,
    and the protocol settings the setup stage sends (shares, threshold)."""

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self.stages: list[StageRecord] = []
        self.protocol: dict[str, Any] = {}

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        sent = list(messages)
        configs = sent[0].content.config_records.get(RECORD_KEY_CONFIGS) if sent else None
        stage = str(configs.get(Key.STAGE)) if configs is not None else "unknown"
        if stage == STAGES[0] and configs is not None:
            self.protocol = {"shares": configs.get(Key.SHARE_NUMBER)}
            self.protocol["threshold"] = configs.get(Key.THRESHOLD)
        started = time.monotonic()
        replies = list(self._grid.send_and_receive(sent, timeout=timeout))
        seconds = time.monotonic() - started
        outcomes = {m.metadata.dst_node_id: "timeout" for m in sent}
        sent_to = destinations(sent)
        reasons: dict[int, str] = {}
        for reply in replies:
            node_id = replying_node(reply, sent_to)  # Flower's error replies: the SuperLink's
            outcomes[node_id] = "failed" if reply.has_error() else "ok"
            if reply.has_error():
                reasons[node_id] = reply.error.reason or ""
        self.stages.append(
            StageRecord(
                stage=stage,
                outcomes=outcomes,
                reasons=reasons,
                sent_bytes=message_bytes(sent),
                received_bytes=message_bytes(replies),
                seconds=round(seconds, 3),
                timeout=timeout,
            )
        )
        return replies


@dataclass(frozen=True)
class WorkflowResult:
    """What one SecAgg+ round told the coordinator.

    ``aggregate``: the unmasked ``Σ (n_i/max_weight)·x_i / Σ (n_i/max_weight)`` over the
    contributors' vectors ``x_i``, or None when the workflow halted. ``contributors``: node
    id → (plaintext ``num_examples``, plaintext metrics) of every node whose masked vector is
    in the sum.
    """

    aggregate: list[np.ndarray] | None
    contributors: dict[int, tuple[int, dict[str, Scalar]]]
    stages: list[StageRecord]
    protocol: dict[str, Any] = field(default_factory=dict)


def run_secagg_workflow(
    grid: Grid,
    workflow: SecAggPlusWorkflow,
    server_round: int,
    arrays: ArrayRecord,
    configs: Mapping[int, ConfigRecord],
) -> WorkflowResult:
    """Run ``workflow`` once: send ``arrays`` and each node's ``configs`` entry to the nodes
    ``configs`` names (the sample), return the sum and every stage's record."""
    recording = RecordingGrid(grid)
    parameters = compat.arrayrecord_to_parameters(arrays, keep_input=True)
    shim = ShimStrategy(
        recording,
        # a legacy FitIns config holds what a ConfigRecord holds (lists too: array names)
        {
            node_id: FitIns(parameters, cast(dict[str, Scalar], dict(config)))
            for node_id, config in configs.items()
        },
    )
    private = Context(
        run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
    )
    legacy = LegacyContext(private, strategy=shim, client_manager=SimpleClientManager())
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: server_round}
    )
    legacy.state.array_records[MAIN_PARAMS_RECORD] = arrays
    workflow(recording, legacy)
    aggregate = None if shim.aggregate is None else parameters_to_ndarrays(shim.aggregate)
    return WorkflowResult(
        aggregate=aggregate,
        contributors=shim.contributors if aggregate is not None else {},
        stages=recording.stages,
        protocol=recording.protocol,
    )

"""SecAgg+ on the hospital: the production ClientApp answers Flower's ``SecAggPlusWorkflow``.

Rounds run in process (``tests.secagg_client_round``: Flower's real workflow and
``secaggplus_mod``, protobuf on every message, no Ray) with the real train handler on tiny
synthetic hospitals. What a hospital sends is compared with numpy (oracle).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import pytest
from dp_accounting import dp_event, rdp
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import FitIns, bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.common.serde import message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from flwr.supercore.task_identity import TaskIdentity

from client.app import build_client_app
from client.mods import contain_errors
from client.secagg_transport import UnmaskedReplyError, secagg_reply_guard, widen_masked_vectors
from client.secure_aggregation import (
    SaturationError,
    check_range,
    legacy_train_bridge,
    secure_aggregation,
)
from common.config import TrainConfig
from common.models import build_model
from common.privacy import local_steps
from common.secure_aggregation import (
    ARRAY_NAMES_KEY,
    MAX_WEIGHT_KEY,
    RANGE_USE_KEY,
    SATURATION_LIMIT,
    SCALE_KEY,
)
from common.settings import kebab_keys
from simulations.hospitals import simulated_hospital
from simulations.unreliable import SimulatedDropoutError, fault_for, unreliable_mod
from tests.factories import app_config, run_config
from tests.secagg_client_round import InProcessGrid, SecureRound, secure_round, wire

HOSPITALS = 3
NODES = [101, 102, 103]
SETTINGS: dict[str, Any] = {"model": "cnn-small", "synthetic_examples": 40, "batch_size": 8}
TRAIN = {
    **{key: run_config()[key] for key in kebab_keys(TrainConfig)},
    "local-epochs": 1,
    "batch-size": 8,
    "server-round": 1,
}
SATURATED = "update refused before masking: it would saturate the SecAgg+ range"


@pytest.fixture(scope="module", autouse=True)
def module_task_identity() -> Iterator[None]:
    """Flower stamps messages with the running task's identity; the module's shared rounds
    (module fixtures) need one too (as ``tests.conftest.task_identity``)."""
    previous = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id = TaskIdentity.run_id = TaskIdentity.node_id = 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = previous


def hospital_context(node: int, **settings: Any) -> Context:
    return Context(
        run_id=1,
        node_id=node,
        node_config={"partition-id": NODES.index(node), "num-partitions": HOSPITALS},
        state=RecordDict(),
        run_config=run_config(**{**SETTINGS, **settings}),
    )


def secagg_config(names: list[str], scale: float, max_weight: float) -> dict[str, Any]:
    return {**TRAIN, SCALE_KEY: scale, MAX_WEIGHT_KEY: max_weight, ARRAY_NAMES_KEY: names}


class Recorder:
    """An inner mod (next to the handler): every request it sees and the reply it passes on."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Message, Message]] = []

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        self.calls.append((context.node_id, msg, reply))
        return reply

    def arrays(self, node: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """What node ``node``'s handler received and returned (in the model's order)."""
        (request, reply) = next((m, r) for n, m, r in self.calls if n == node)
        return (
            request.content.array_records["arrays"].to_numpy_ndarrays(),
            reply.content.array_records["arrays"].to_numpy_ndarrays(),
        )


def run_round(
    weights: dict[str, np.ndarray],
    *,
    scale: float = 1.0,
    max_weight: float = 1000.0,
    mods: tuple[Callable[..., Message], ...] = (),
    **settings: Any,
) -> SecureRound:
    app = build_client_app(simulated_hospital, mods=mods)
    contexts = {node: hospital_context(node, **settings) for node in NODES}
    config = secagg_config(list(weights), scale, max_weight)
    return secure_round(InProcessGrid(app, contexts), weights, config, max_weight=max_weight)


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    model = build_model("cnn-small", app_config().data.spec())
    return {f"layer-{i}": w for i, w in enumerate(model.get_weights())}


def collect_request(
    weights: dict[str, np.ndarray], config: dict[str, Any], node: int = 101
) -> Message:
    """A collect-stage request as ``secaggplus_mod`` hands it to the chain inside it."""
    arrays = ArrayRecord({name: Array(value) for name, value in weights.items()})
    fitins = FitIns(compat.arrayrecord_to_parameters(arrays, keep_input=True), config)
    content = compat.fitins_to_recorddict(fitins, keep_input=True)
    content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord({})
    return Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN)


def set_up(context: Context, max_weight: float, clipping_range: float) -> Context:
    """What ``secaggplus_mod`` stored at setup and the bridge reads."""
    context.state.config_records[RECORD_KEY_STATE] = ConfigRecord(
        {"max_weight": max_weight, "clipping_range": clipping_range}
    )
    return context


def bridge(
    weights: dict[str, np.ndarray], scale: float, **settings: Any
) -> tuple[Message, Recorder]:
    """The bridge alone, on the production app's inner chain (real handler)."""
    recorder = Recorder()
    app = build_client_app(simulated_hospital, mods=[recorder])
    config = secagg_config(list(weights), scale, 1000.0)
    if settings.get("dp") == "hospital":  # as the coordinator's DP wrapper sends it
        config.update({MAX_WEIGHT_KEY: 1.0, KEY_CLIPPING_NORM: settings["dp_clip_norm"]})
    context = set_up(hospital_context(101, **settings), config[MAX_WEIGHT_KEY], 8.0)
    request = collect_request(weights, config)
    return legacy_train_bridge(request, context, app), recorder


# 1. The bridge's legacy fitres ------------------------------------------------------------


@pytest.fixture(scope="module")
def bridged(weights: dict[str, np.ndarray]) -> tuple[Message, Recorder]:
    return bridge(weights, scale=3.0)


def test_the_bridge_sends_the_scaled_update_and_scalar_metrics(
    bridged: tuple[Message, Recorder],
) -> None:
    reply, recorder = bridged

    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    received, returned = recorder.arrays(101)
    expected = [
        3.0 * (b.astype(np.float64) - a.astype(np.float64))
        for a, b in zip(received, returned, strict=True)
    ]
    sent = parameters_to_ndarrays(fitres.parameters)
    assert [s.shape for s in sent] == [e.shape for e in expected]
    assert all(np.array_equal(s, e) for s, e in zip(sent, expected, strict=True))
    handler_metrics = recorder.calls[0][2].content.metric_records["metrics"]
    assert fitres.num_examples == handler_metrics["num-examples"]
    largest = max(float(np.abs(e).max()) for e in expected)
    assert fitres.metrics == {
        **handler_metrics,
        RANGE_USE_KEY: pytest.approx(fitres.num_examples / 1000.0 * largest / 8.0, rel=1e-12),
        "site-name": "hospital-0",
        "data-kind": "simulated-synthetic",
    }


def test_the_handler_gets_the_contract_request_without_secagg_keys(
    bridged: tuple[Message, Recorder], weights: dict[str, np.ndarray]
) -> None:
    _, recorder = bridged

    [(_, request, _)] = recorder.calls
    assert sorted(request.content.keys()) == ["arrays", "config"]
    assert list(request.content.array_records["arrays"]) == list(weights)
    assert dict(request.content.config_records["config"]) == TRAIN


# 2. Saturation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peak", "ratio", "clip", "refused"),
    [
        (4.0, 1.0, 8.0, False),
        (4.001, 1.0, 8.0, True),
        (8.0, 0.5, 8.0, False),
        (9.0, 0.5, 8.0, True),
    ],
)
def test_saturation_is_refused_above_the_limit(
    peak: float, ratio: float, clip: float, refused: bool
) -> None:
    update = [np.array([0.1, -peak]), np.zeros((2, 2))]

    if refused:
        with pytest.raises(SaturationError):
            check_range(update, ratio, clip)
    else:
        assert check_range(update, ratio, clip) == pytest.approx(ratio * peak / clip)
        assert check_range(update, ratio, clip) <= SATURATION_LIMIT


def test_a_nan_update_is_refused() -> None:
    with pytest.raises(Exception, match="NaN"):
        check_range([np.array([np.nan, 1.0])], 1.0, 8.0)


def test_a_saturating_round_masks_and_sends_nothing(weights: dict[str, np.ndarray]) -> None:
    outcome = run_round(weights, scale=1e6)

    collect = [e for e in outcome.exchanges if e.stage == Stage.COLLECT_MASKED_VECTORS]
    assert outcome.aggregate is None
    assert len(collect) == HOSPITALS
    assert all(e.reply.has_error() for e in collect)
    assert {e.reply.error.reason for e in collect} == {f"{SATURATED} (details in the site log)"}


# 3. The reply guard and pass-through ------------------------------------------------------


def secagg_train(stage: str) -> Message:
    content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.STAGE: stage})})
    return Message(content=content, dst_node_id=1, message_type=MessageType.TRAIN)


def answering(content: RecordDict) -> ClientAppCallable:
    return lambda msg, context: Message(content=content, reply_to=msg)


@pytest.mark.parametrize(
    ("records", "blocked"),
    [
        ({RECORD_KEY_CONFIGS: ConfigRecord({"masked": [b"x"]})}, False),
        ({RECORD_KEY_CONFIGS: ConfigRecord(), "fitres.parameters": ArrayRecord()}, False),
        (
            {
                RECORD_KEY_CONFIGS: ConfigRecord(),
                "fitres.parameters": ArrayRecord([np.ones(2, np.float32)]),
            },
            True,
        ),
        ({RECORD_KEY_CONFIGS: ConfigRecord(), "arrays": ArrayRecord([np.ones(2)])}, True),
        ({RECORD_KEY_CONFIGS: ConfigRecord(), "metrics": MetricRecord({"loss": 1.0})}, True),
        ({"fitres.metrics": ConfigRecord()}, True),
    ],
)
def test_the_guard_lets_only_masked_secagg_replies_leave(
    records: dict[str, Any], blocked: bool
) -> None:
    context = hospital_context(101)
    guarded = ClientApp(mods=[contain_errors, secagg_reply_guard])
    guarded.train()(lambda msg, ctx: answering(RecordDict(records))(msg, ctx))

    reply = guarded(secagg_train(Stage.SHARE_KEYS), context)

    reason = reply.error.reason if reply.has_error() else None
    assert reason == (
        f"{UnmaskedReplyError.public_reason} (details in the site log)" if blocked else None
    )


@pytest.mark.parametrize("message_type", [MessageType.TRAIN, MessageType.EVALUATE])
def test_messages_without_secagg_configs_pass_straight_through(message_type: str) -> None:
    content = RecordDict({"arrays": ArrayRecord([np.ones(3, np.float32)])})
    request = Message(content=content, dst_node_id=1, message_type=message_type)
    reply = Message(content=RecordDict({"arrays": ArrayRecord([np.ones(2)])}), reply_to=request)

    passed = [
        mod(request, hospital_context(101), lambda m, c: reply)
        for mod in (secure_aggregation, secagg_reply_guard)
    ]

    assert all(p is reply for p in passed)


# 4. A whole round: masked replies pass, one training per hospital, clip before delta -------


@pytest.fixture(scope="module")
def plain_round(weights: dict[str, np.ndarray]) -> tuple[SecureRound, Recorder]:
    recorder = Recorder()
    return run_round(weights, scale=2.0, mods=(recorder,)), recorder


def test_the_round_sums_the_masked_updates(plain_round: tuple[SecureRound, Recorder]) -> None:
    outcome, recorder = plain_round

    deltas = {
        n: [b.astype(np.float64) - a for a, b in zip(*recorder.arrays(n), strict=True)]
        for n in NODES
    }
    sizes = {n: outcome.results[n].num_examples for n in NODES}
    expected = [
        sum(2.0 * sizes[n] * deltas[n][i] for n in NODES) / sum(sizes.values())
        for i in range(len(deltas[101]))
    ]
    assert outcome.aggregate is not None
    # Flower's quantization: step 2·8/2**22 per hospital, stochastic rounding
    bound = HOSPITALS * 2 * 8.0 / 2**22 / (sum(sizes.values()) / 1000.0)
    assert (
        max(np.abs(a - e).max() for a, e in zip(outcome.aggregate, expected, strict=True)) < bound
    )


def test_no_secagg_reply_carries_an_array(plain_round: tuple[SecureRound, Recorder]) -> None:
    outcome, _ = plain_round

    assert len(outcome.exchanges) == 4 * HOSPITALS
    assert not any(e.reply.has_error() for e in outcome.exchanges)
    assert all(
        len(record) == 0
        for e in outcome.exchanges
        for record in e.reply.content.array_records.values()
    )


def masked_vectors(reply: Message) -> list[np.ndarray]:
    record = reply.content.config_records[RECORD_KEY_CONFIGS]
    return [bytes_to_ndarray(b) for b in cast(list[bytes], record[Key.MASKED_PARAMETERS])]


def test_masked_vectors_travel_as_uint32_and_widen_losslessly(
    plain_round: tuple[SecureRound, Recorder],
) -> None:
    outcome, _ = plain_round
    collect = [e.reply for e in outcome.exchanges if e.stage == Stage.COLLECT_MASKED_VECTORS]
    sent = [masked_vectors(reply) for reply in collect]

    widened = widen_masked_vectors(wire(reply) for reply in collect)

    assert {a.dtype for vectors in sent for a in vectors} == {np.dtype(np.uint32)}
    for before, after in zip(sent, map(masked_vectors, widened), strict=True):
        assert [a.dtype for a in after] == [np.dtype(np.int64)] * len(before)
        assert all(np.array_equal(a, b) for a, b in zip(after, before, strict=True))
    sizes = [message_to_proto(m).ByteSize() for m in (collect[0], widened[0])]
    parameters = sum(a.size for a in sent[0])
    assert sizes[1] - sizes[0] == pytest.approx(4 * parameters, rel=0.01)


def test_each_hospital_trains_once_at_the_collect_stage(
    plain_round: tuple[SecureRound, Recorder],
) -> None:
    _, recorder = plain_round

    assert sorted(node for node, _, _ in recorder.calls) == NODES
    assert all(sorted(msg.content.keys()) == ["arrays", "config"] for _, msg, _ in recorder.calls)


def oracle_epsilon(noise: float, q: float, steps: int, delta: float = 1e-5) -> float:
    accountant = rdp.RdpAccountant()
    event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(noise))
    accountant.compose(dp_event.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))


def test_record_dp_spends_one_round_of_epsilon(weights: dict[str, np.ndarray]) -> None:
    dp: dict[str, Any] = {"dp": "record", "dp_epsilon": 50.0, "dp_noise_multiplier": 1.0}

    outcome = run_round(weights, **dp)

    config = app_config(**{**SETTINGS, **dp})
    for node in NODES:
        examples = len(
            simulated_hospital(config.data, config.seed, NODES.index(node), HOSPITALS).train
        )
        steps = local_steps(examples, 8, 1)
        assert outcome.results[node].metrics["epsilon"] == pytest.approx(
            oracle_epsilon(1.0, 8 / examples, steps), rel=1e-9
        )


def test_hospital_dp_clips_before_the_update_is_taken(weights: dict[str, np.ndarray]) -> None:
    reply, _ = bridge(weights, scale=5.0, dp="hospital", dp_clip_norm=0.01)

    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    norm = np.sqrt(sum(np.sum(u**2) for u in parameters_to_ndarrays(fitres.parameters)))
    assert fitres.num_examples == 1
    assert norm / 5.0 == pytest.approx(0.01, rel=1e-4)


# 5. Faults fire only at the collect stage --------------------------------------------------


def drawn_faults(
    dropout_rate: float = 0.0, straggler_rate: float = 0.0, hospitals: int = 1
) -> list[str]:
    """The faults the hospitals draw in round 1 (the seed of the run config)."""
    seed = app_config().seed
    return [fault_for(seed, 1, p, dropout_rate, straggler_rate) for p in range(hospitals)]


@pytest.mark.parametrize("stage", Stage.all())
@pytest.mark.parametrize("kind", ["drop", "straggle"])
def test_faults_fire_only_at_the_collect_stage(stage: str, kind: str) -> None:
    waits: list[float] = []
    dropout, straggler = (0.99, 0.0) if kind == "drop" else (0.0, 0.99)
    context = hospital_context(101, dropout_rate=dropout, straggler_rate=straggler)
    assert drawn_faults(dropout, straggler) == [
        kind
    ]  # at the collect stage this hospital would fire
    mod = unreliable_mod(waits.append)
    passed = Message(content=RecordDict(), reply_to=secagg_train(stage))

    def fire() -> Message:
        return mod(secagg_train(stage), context, lambda m, c: passed)

    if stage == Stage.COLLECT_MASKED_VECTORS and kind == "drop":
        with pytest.raises(SimulatedDropoutError):
            fire()
    else:
        assert fire() is passed
    assert len(waits) == (stage == Stage.COLLECT_MASKED_VECTORS and kind == "straggle")


def test_a_straggler_waits_once_per_secagg_round(weights: dict[str, np.ndarray]) -> None:
    waits: list[float] = []

    outcome = run_round(weights, mods=(unreliable_mod(waits.append),), straggler_rate=0.99)

    assert drawn_faults(straggler_rate=0.99, hospitals=HOSPITALS) == ["straggle"] * HOSPITALS
    assert outcome.aggregate is not None
    assert len(waits) == HOSPITALS

"""Record-level DP through the production ClientApp: ε in the reply, the budget enforced.

Each test sends a real train message to ``client.app.build_client_app`` (handlers and
mods) for a simulated hospital; ε is compared with ``dp-accounting`` called directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_accounting import dp_event, rdp
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from client.app import build_client_app
from common.config import TrainConfig
from common.models import build_model
from common.privacy import local_steps
from common.settings import kebab_keys
from simulations.hospitals import simulated_hospital
from tests.factories import app_config, run_config

pytestmark = pytest.mark.usefixtures("task_identity")

SETTINGS: dict[str, Any] = {
    "model": "cnn-small",
    "synthetic_examples": 60,
    "dp": "record",
    "dp_epsilon": 50.0,
    "dp_noise_multiplier": 1.0,
    "local_epochs": 1,
    "batch_size": 8,
}
TRAIN = {
    **{key: run_config()[key] for key in kebab_keys(TrainConfig)},
    "local-epochs": 1,
    "batch-size": 8,
    "learning-rate": 0.001,
    "proximal-mu": 0.0,
}


def train_request(weights: list[np.ndarray], **extra: Any) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord(weights),
            "config": ConfigRecord({**TRAIN, "server-round": 1, **extra}),
        }
    )
    return Message(content=content, dst_node_id=1, message_type=MessageType.TRAIN)


def hospital_context(state: RecordDict, **overrides: Any) -> Context:
    return Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 0, "num-partitions": 2},
        state=state,
        run_config=run_config(**{**SETTINGS, **overrides}),
    )


def oracle_epsilon(noise: float, q: float, steps: int, delta: float = 1e-5) -> float:
    accountant = rdp.RdpAccountant()
    event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(noise))
    accountant.compose(dp_event.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))


@pytest.fixture(scope="module")
def weights() -> list[np.ndarray]:
    return build_model("cnn-small", app_config().data.spec()).get_weights()


@pytest.fixture(scope="module")
def examples() -> int:
    config = app_config(**SETTINGS)
    return len(simulated_hospital(config.data, config.seed, 0, 2).train)


def test_each_train_reply_carries_the_cumulative_epsilon(
    weights: list[np.ndarray], examples: int
) -> None:
    app, state = build_client_app(simulated_hospital), RecordDict()

    replies = [app(train_request(weights), hospital_context(state)) for _ in range(2)]

    steps = local_steps(examples, 8, 1)
    reported = [reply.content.metric_records["metrics"]["epsilon"] for reply in replies]
    expected = [oracle_epsilon(1.0, 8 / examples, steps * k) for k in (1, 2)]
    assert reported == pytest.approx(expected, rel=1e-9)
    assert sorted(replies[0].content.metric_records["metrics"]) == [
        "accuracy",
        "epsilon",
        "loss",
        "num-examples",
    ]


def test_over_budget_the_hospital_replies_budget_exhausted_and_trains_nothing(
    weights: list[np.ndarray], examples: int
) -> None:
    app, state = build_client_app(simulated_hospital), RecordDict()
    one_round = oracle_epsilon(1.0, 8 / examples, local_steps(examples, 8, 1))

    reply = app(train_request(weights), hospital_context(state, max_epsilon=0.5 * one_round))

    assert reply.has_error()
    assert reply.error.reason == "privacy budget exhausted (details in the site log)"
    assert state.config_records == {}  # nothing composed: the ledger was never written


def test_a_setting_the_hospital_did_not_accept_is_refused(weights: list[np.ndarray]) -> None:
    app, state = build_client_app(simulated_hospital), RecordDict()

    reply = app(train_request(weights, **{"max-epsilon": 1e6}), hospital_context(state))

    assert reply.has_error()
    assert reply.error.reason == "ConfigError (details in the site log)"
    assert state.config_records == {}


def test_the_ledger_file_of_a_simulated_run_survives_the_process(
    weights: list[np.ndarray], examples: int, tmp_path: Path
) -> None:
    first = build_client_app(simulated_hospital)
    first(train_request(weights), hospital_context(RecordDict(), run_dir=str(tmp_path)))

    again = build_client_app(simulated_hospital)  # a resumed run: new app, new Context.state
    reply = again(train_request(weights), hospital_context(RecordDict(), run_dir=str(tmp_path)))

    steps = local_steps(examples, 8, 1)
    assert reply.content.metric_records["metrics"]["epsilon"] == pytest.approx(
        oracle_epsilon(1.0, 8 / examples, 2 * steps), rel=1e-9
    )
    assert (tmp_path / "privacy-ledgers" / "hospital-0.json").is_file()

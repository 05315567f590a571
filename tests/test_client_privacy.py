"""Nothing leaves a hospital but arrays shaped like the model's weights and scalar metrics."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from client.app import build_client_app
from client.mods import reply_violations
from common.models import build_model
from tests.factories import app_config, data_spec, run_config


def request(message_type: str, model: keras.Model) -> Message:
    train = {"local-epochs": 1, "batch-size": 16, "learning-rate": 0.001, "proximal-mu": 0.0}
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.get_weights()),
            "config": ConfigRecord({**train, "server-round": 1}),
        }
    )
    return Message(content=content, dst_node_id=1, message_type=message_type)


def context(node_config: dict[str, int | str]) -> Context:
    values = run_config(model="cnn-small", synthetic_examples=60)
    return Context(
        run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=values
    )


def assert_only_weights_and_scalars(sent: Message, reply: Message, train: bool) -> None:
    assert not reply.has_error(), reply.error
    content = reply.content
    assert list(content.config_records) == []
    assert len(content.metric_records) == 1
    for value in next(iter(content.metric_records.values())).values():
        assert type(value) in (int, float)
    if train:
        got = [(a.shape, a.dtype) for a in content["arrays"].values()]
        expected = [(a.shape, a.dtype) for a in sent.content["arrays"].values()]
        assert got == expected
        assert list(content.array_records) == ["arrays"]
    else:
        assert list(content.array_records) == []


@pytest.fixture(scope="module")
def client_app() -> ClientApp:
    return build_client_app()


@pytest.mark.parametrize("message_type", [MessageType.TRAIN, MessageType.EVALUATE])
@pytest.mark.usefixtures("task_identity")
def test_replies_carry_only_weights_and_scalar_metrics(
    client_app: ClientApp, message_type: str
) -> None:
    model = build_model("cnn-small", data_spec())
    sent = request(message_type, model)

    reply = client_app(sent, context({"partition-id": 0, "num-partitions": 3}))

    assert_only_weights_and_scalars(sent, reply, train=message_type == MessageType.TRAIN)
    metrics = next(iter(reply.content.metric_records.values()))
    expected = {"num-examples", "loss", "accuracy"}
    if message_type == MessageType.EVALUATE:
        expected |= {"auc", "sensitivity", "specificity"}
    assert set(metrics) == expected


@pytest.mark.usefixtures("task_identity")
def test_data_errors_stay_in_the_hospital(client_app: ClientApp, tmp_path: object) -> None:
    secret = "/data/patients/jane-doe-0042"
    sent = request(MessageType.TRAIN, build_model("cnn-small", data_spec()))

    reply = client_app(sent, context({"data-path": secret, "site-name": "st-mary"}))

    assert reply.has_error()
    assert "jane-doe" not in (reply.error.reason or "")
    assert "DataError" in (reply.error.reason or "")


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"leak": ConfigRecord({"site": "st-mary"})}, "config record `leak` in reply"),
        ({"more": MetricRecord({"n": 1})}, "expected one metric record, found 2"),
        ({"extra": ArrayRecord([np.zeros(3)])}, "array records ['arrays', 'extra'] != ['arrays']"),
    ],
)
@pytest.mark.usefixtures("task_identity")
def test_guard_names_what_may_not_leave(extra: RecordDict, problem: str) -> None:
    model = build_model("cnn-small", data_spec())
    sent = request(MessageType.TRAIN, model)
    content = RecordDict(
        {"arrays": ArrayRecord(model.get_weights()), "metrics": MetricRecord({"num-examples": 3})}
    )
    for key, record in extra.items():
        content[key] = record

    problems = reply_violations(sent, Message(content=content, reply_to=sent))

    assert problem in problems


@pytest.mark.usefixtures("task_identity")
def test_guard_refuses_reshaped_arrays() -> None:
    model = build_model("cnn-small", data_spec())
    sent = request(MessageType.TRAIN, model)
    weights = [w.reshape(-1) for w in model.get_weights()]
    content = RecordDict(
        {"arrays": ArrayRecord(weights), "metrics": MetricRecord({"num-examples": 3})}
    )

    problems = reply_violations(sent, Message(content=content, reply_to=sent))

    assert problems == ["arrays in `arrays` differ in shape or dtype from the model's"]


def test_app_config_factory_matches_defaults() -> None:
    assert app_config().model == "cnn"

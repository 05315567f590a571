"""The evaluate request names the split to score; the hospital scores exactly that one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from client.app import build_client_app
from common.config import DataConfig
from common.contract import evaluate_request_problems
from common.data.schema import SiteData, Split
from common.models import build_model
from tests.factories import app_config, run_config

SETTINGS = {"model": "cnn-small", "synthetic_examples": 60}
CLASSES = ("normal", "pneumonia")


@pytest.mark.parametrize(
    ("config", "problems"),
    [
        ({"server-round": 3, "split": "val"}, []),
        ({"server-round": 3, "split": "test"}, []),
        ({"server-round": 3, "split": "train"}, ["`split` is not one of val, test"]),
        ({"server-round": 3}, ["record `config` keys: missing `split`"]),
        (
            {"server-round": 3, "split": "val", "batch-size": 8},
            ["record `config` keys: unexpected `batch-size`"],
        ),
    ],
)
def test_evaluate_request_problems(config: dict[str, Any], problems: list[str]) -> None:
    assert evaluate_request_problems(config) == problems


def split(n: int) -> Split:
    rng = np.random.default_rng(n)
    images = rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)
    return Split(images, np.arange(n, dtype=np.int64) % 2)


def hospital(val: Split | None) -> Any:
    def sites(
        data: DataConfig, seed: int, partition_id: int, num_partitions: int, adversary: Any
    ) -> SiteData:
        return SiteData(f"hospital-{partition_id}", CLASSES, split(30), split(12), val)

    return sites


def evaluate(val: Split | None, split_name: str) -> Message:
    app = build_client_app(hospital(val))
    model = build_model("cnn-small", app_config(**SETTINGS).data.spec())
    config = ConfigRecord({"server-round": 1, "split": split_name})
    content = RecordDict({"arrays": ArrayRecord(model.get_weights()), "config": config})
    request = Message(content=content, dst_node_id=1, message_type=MessageType.EVALUATE)
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 1, "num-partitions": 3},
        state=RecordDict(),
        run_config=run_config(**SETTINGS),
    )
    return app(request, context)


@pytest.mark.parametrize(("split_name", "size"), [("val", 7), ("test", 12)])
@pytest.mark.usefixtures("task_identity")
def test_the_hospital_scores_the_requested_split(split_name: str, size: int) -> None:
    reply = evaluate(split(7), split_name)

    assert not reply.has_error(), reply.error
    assert reply.content.metric_records["metrics"]["num-examples"] == size


@pytest.mark.parametrize(
    ("val", "split_name", "reason"),
    [
        (None, "val", "the hospital has no validation split (details in the site log)"),
        (None, "test", None),
        ("given", "train", "RunError (details in the site log)"),
    ],
)
@pytest.mark.usefixtures("task_identity")
def test_what_a_hospital_cannot_score_is_an_error_reply(
    val: str | None, split_name: str, reason: str | None
) -> None:
    reply = evaluate(None if val is None else split(7), split_name)

    assert (reply.error.reason if reply.has_error() else None) == reason

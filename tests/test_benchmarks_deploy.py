"""The pure parts of ``benchmarks/deploy.py`` and its no-op ClientApp (no federation runs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from benchmarks.deploy import (
    REQUIRED_KEYS,
    Measured,
    parse_args,
    payload,
    ratio,
    rows,
    steady_state,
)
from benchmarks.noop_app import noop_client_app
from common.contract import reply_violations


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ([30.0, 6.0], 6.0),
        ([30.0, 6.0, 7.0, 8.0, 9.0], (6.0 + 7.0 + 8.0 + 9.0) / 4),
        ([1.0, 2.0, 2.0], 2.0),
    ],
)
def test_steady_state_is_the_mean_after_round_one(seconds: list[float], expected: float) -> None:
    assert steady_state(seconds) == pytest.approx(expected)


@pytest.mark.parametrize("seconds", [[], [5.0]])
def test_steady_state_needs_two_rounds(seconds: list[float]) -> None:
    with pytest.raises(ValueError, match="at least 2 rounds") as error:
        steady_state(seconds)

    expected = (
        f"Invalid value for `round_seconds`. Expected at least 2 rounds. Received: {len(seconds)}"
    )
    assert str(error.value) == expected


@pytest.mark.parametrize(
    ("deployed", "floor", "simulated", "expected"),
    [(7.0, 6.0, 1.0, 1.0), (8.4, 6.0, 1.0, 1.2), (3.0, 2.0, 4.0, 0.5)],
)
def test_ratio_divides_by_floor_plus_simulated(
    deployed: float, floor: float, simulated: float, expected: float
) -> None:
    assert ratio(deployed, floor, simulated) == pytest.approx(expected)


def _measured() -> dict[str, Measured]:
    return {
        "deployed": Measured("deployed", [20.0, 7.0, 9.0], 1.5, 80.0),
        "floor": Measured("floor", [15.0, 6.0, 6.0], 1.0, 70.0),
        "simulated": Measured("simulated", [10.0, 0.5, 1.5], 2.0, 40.0),
    }


def test_payload_holds_the_four_required_keys_as_floats() -> None:
    # Execute
    result = payload(_measured(), {"sites": 3})

    # Assert: exact values from the round lists above
    assert list(result)[:4] == list(REQUIRED_KEYS)
    assert all(isinstance(result[k], float) for k in REQUIRED_KEYS)
    assert result["deployed_s_per_round"] == pytest.approx(8.0)
    assert result["floor_s_per_round"] == pytest.approx(6.0)
    assert result["simulated_s_per_round"] == pytest.approx(1.0)
    assert result["ratio"] == pytest.approx(8.0 / 7.0)
    assert result["round_seconds"]["floor"] == [15.0, 6.0, 6.0]
    assert result["settings"] == {"sites": 3}


def test_payload_adds_the_plain_deployment_only_when_measured() -> None:
    # Prepare
    measured = {**_measured(), "plain": Measured("plain", [40.0, 20.0, 22.0], 3.0, 150.0)}

    # Execute
    with_plain = payload(measured, {})
    without = payload(_measured(), {})

    # Assert: the plain deployment never enters the ratio
    assert with_plain["plain_s_per_round"] == pytest.approx(21.0)
    assert with_plain["ratio"] == without["ratio"]
    assert "plain_s_per_round" not in without
    assert with_plain["round_seconds"]["plain"] == [40.0, 20.0, 22.0]


def test_rows_list_each_variant_with_steady_and_first_round() -> None:
    table_rows = rows(_measured())

    assert [row[1:] for row in table_rows] == [
        [8.0, 20.0, 80.0, 1.5],
        [6.0, 15.0, 70.0, 1.0],
        [1.0, 10.0, 40.0, 2.0],
    ]


@pytest.mark.parametrize(
    "argv", [["--rounds", "1"], ["--sites", "0"], ["--examples", "0"]], ids=str
)
def test_parse_args_refuses_settings_without_a_steady_state(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)

    assert exit_info.value.code == 2
    assert "--rounds ≥ 2" in capsys.readouterr().err


def _request(message_type: str) -> Message:
    arrays = ArrayRecord([np.ones((3, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)])
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    return Message(content=content, dst_node_id=1, message_type=message_type)


def _context() -> Context:
    node_config: dict[str, Any] = {"site-name": "st-marys", "data-path": "/nowhere"}
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize("message_type", [MessageType.TRAIN, MessageType.EVALUATE])
def test_noop_app_replies_with_exactly_the_contract(message_type: str) -> None:
    # Prepare
    request = _request(message_type)

    # Execute
    reply = noop_client_app()(request, _context())

    # Assert: the coordinator's own check finds nothing; the site is named
    reference = request.content.array_records["arrays"]
    assert reply_violations(message_type, reply.content, reference) == []
    assert reply.content.config_records["site"]["site-name"] == "st-marys"


@pytest.mark.usefixtures("task_identity")
def test_noop_app_returns_the_received_arrays() -> None:
    # Prepare
    request = _request(MessageType.TRAIN)

    # Execute
    reply = noop_client_app()(request, _context())

    # Assert
    sent = request.content.array_records["arrays"].to_numpy_ndarrays()
    returned = reply.content.array_records["arrays"].to_numpy_ndarrays()
    assert all(np.array_equal(s, r) for s, r in zip(sent, returned, strict=True))
    assert reply.content.metric_records["metrics"]["num-examples"] == 1

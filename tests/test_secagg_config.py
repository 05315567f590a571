"""The secure-aggregation settings and what they refuse, each in one line."""

from __future__ import annotations

from typing import Any

import pytest

from common.config import parse_app_config
from common.errors import ConfigError
from tests.factories import run_config

ON = {"secure-aggregation": True, "min-train-nodes": 3, "min-available-nodes": 5}
WHY = "secure aggregation reveals only the sum of the hospitals' updates"
ALLOWED = "'fedavg', 'fedavgm', 'fedprox', 'fedadam', 'fedyogi', 'fedadagrad'"
SHARES = "a number in (0, 1] (a fraction of the shares)"


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        ON,
        {"secure-aggregation": True},  # the manifest's defaults (at least 3 hospitals: run time)
        {**ON, "secagg-num-shares": 3, "secagg-reconstruction-threshold": 2},
        {**ON, "secagg-num-shares": 0.5, "secagg-reconstruction-threshold": 1.0},
        {**ON, "strategy": "fedadam", "attack": "label-flip", "dp": "record"},
        {**ON, "dp": "hospital", "min-available-nodes": 3},
        {**ON, "secagg-quantization-range": 2**32 // 5 - 1},
        {"secagg-num-shares": 5},  # off: not bounded by min-train-nodes
    ],
)  # fmt: skip
def test_good_secure_aggregation_settings_parse(overrides: dict[str, Any]) -> None:
    config = parse_app_config({**run_config(), **overrides})

    assert config.federation.secure_aggregation == overrides.get("secure-aggregation", False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({**ON, "strategy": "krum"}, f"Invalid value for `strategy`. Expected one of {ALLOWED} when `secure-aggregation` is true (krum needs every hospital's update; {WHY}). Received: 'krum'"),
        ({**ON, "strategy": "centeredclip"}, f"Invalid value for `strategy`. Expected one of {ALLOWED} when `secure-aggregation` is true (centeredclip needs every hospital's update; {WHY}). Received: 'centeredclip'"),
        ({**ON, "max-update-norm": 5.0}, f"Invalid value for `max-update-norm`. Expected 0 (off) when `secure-aggregation` is true (no single hospital's update can be checked; {WHY}). Received: 5.0"),
        ({**ON, "attack": "alie", "attack-fraction": 0.2}, f"Invalid value for `attack`. Expected 'none' or 'label-flip' when `secure-aggregation` is true (alie tampers with single hospitals' updates; {WHY}). Received: 'alie'"),
        ({**ON, "secagg-num-shares": 4}, "Invalid value for `secagg-num-shares`. Expected an odd integer ≥ 3 and ≤ `min-train-nodes` (3), or a number in (0, 1] (a fraction of the sampled hospitals). Received: 4"),
        ({**ON, "secagg-num-shares": 5}, "Invalid value for `secagg-num-shares`. Expected an odd integer ≥ 3 and ≤ `min-train-nodes` (3), or a number in (0, 1] (a fraction of the sampled hospitals). Received: 5"),
        ({"secagg-num-shares": 1.5}, "Invalid value for `secagg-num-shares`. Expected an odd integer ≥ 3 and ≤ `min-train-nodes` (2), or a number in (0, 1] (a fraction of the sampled hospitals). Received: 1.5"),
        ({"secagg-num-shares": "all"}, "Invalid value for `secagg-num-shares`. Expected a number. Received: 'all'"),
        ({**ON, "secagg-num-shares": 3, "secagg-reconstruction-threshold": 3}, f"Invalid value for `secagg-reconstruction-threshold`. Expected an integer ≥ 2 and < `secagg-num-shares` (3), or {SHARES}. Received: 3"),
        ({**ON, "secagg-reconstruction-threshold": 3}, f"Invalid value for `secagg-reconstruction-threshold`. Expected an integer ≥ 2 and < `min-train-nodes` (3), or {SHARES}. Received: 3"),
        ({"secagg-reconstruction-threshold": 0.0}, f"Invalid value for `secagg-reconstruction-threshold`. Expected {SHARES}. Received: 0.0"),
        ({"secagg-clipping-range": 0.0}, "Invalid value for `secagg-clipping-range`. Expected a number > 0.0. Received: 0.0"),
        ({"secagg-quantization-range": 1}, "Invalid value for `secagg-quantization-range`. Expected an integer ≥ 2. Received: 1"),
        ({**ON, "secagg-quantization-range": 2**32 // 5 + 1}, "Invalid value for `secagg-quantization-range`. Expected an integer ≥ 2 and ≤ 858993459 (the sum of 5 hospitals' quantized updates, `min-available-nodes`, must stay below 2**32). Received: 858993460"),
        ({"secure-aggregation": "yes"}, "Invalid value for `secure-aggregation`. Expected true or false. Received: 'yes'"),
    ],
)  # fmt: skip
def test_secure_aggregation_refusals_are_one_line(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_app_config({**run_config(), **overrides})

    assert str(caught.value) == message

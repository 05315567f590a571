from __future__ import annotations

import math
import typing

import pytest
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategies

from common.config import StrategyName
from server.aggregation import weighted_mean_ignoring_nan
from server.centered_clip import CenteredClipping
from server.strategies import build_strategy
from tests.factories import app_config

EXPECTED_CLASS = {
    "fedavg": "FedAvg",
    "fedavgm": "FedAvgM",
    "fedprox": "FedProx",
    "fedadam": "FedAdam",
    "fedyogi": "FedYogi",
    "fedadagrad": "FedAdagrad",
    "fedmedian": "FedMedian",
    "fedtrimmedavg": "FedTrimmedAvg",
    "krum": "Krum",
    "multikrum": "MultiKrum",
    "bulyan": "Bulyan",
    "centeredclip": "CenteredClipping",
}
OURS = {"CenteredClipping": CenteredClipping}  # the strategies Flower does not ship


def test_table_covers_every_declared_strategy() -> None:
    assert set(EXPECTED_CLASS) == set(typing.get_args(StrategyName))


@pytest.mark.parametrize(("name", "class_name"), sorted(EXPECTED_CLASS.items()))
def test_each_name_builds_its_class(name: str, class_name: str) -> None:
    config = app_config(strategy=name, min_train_nodes=3, min_available_nodes=4)

    strategy = build_strategy(config)

    assert type(strategy) is OURS.get(class_name, getattr(flwr_strategies, class_name, None))
    assert strategy.min_train_nodes == 3  # type: ignore[attr-defined]
    assert strategy.min_available_nodes == 4  # type: ignore[attr-defined]


def test_strategy_options_come_from_config() -> None:
    prox = build_strategy(app_config(strategy="fedprox", proximal_mu=0.3))
    adam = build_strategy(app_config(strategy="fedadam", server_eta=0.05, server_tau=0.002))
    trimmed = build_strategy(app_config(strategy="fedtrimmedavg", trim_beta=0.1))
    clipped = build_strategy(
        app_config(strategy="centeredclip", clip_radius=0.5, clip_iterations=3)
    )

    assert prox.proximal_mu == 0.3  # type: ignore[attr-defined]
    assert (adam.eta, adam.tau) == (0.05, 0.002)  # type: ignore[attr-defined]
    assert trimmed.beta == 0.1  # type: ignore[attr-defined]
    assert (clipped.radius, clipped.iterations) == (0.5, 3)  # type: ignore[attr-defined]


def reply(num_examples: int, **metrics: float) -> RecordDict:
    return RecordDict({"metrics": MetricRecord({"num-examples": num_examples, **metrics})})


def test_weighted_mean_skips_undefined_values() -> None:
    records = [reply(10, acc=0.5, auc=math.nan), reply(30, acc=0.9, auc=0.8)]

    merged = weighted_mean_ignoring_nan(records, "num-examples")

    assert merged["acc"] == pytest.approx((10 * 0.5 + 30 * 0.9) / 40)
    assert merged["auc"] == pytest.approx(0.8)
    assert "num-examples" not in merged


def test_weighted_mean_all_undefined_stays_nan() -> None:
    merged = weighted_mean_ignoring_nan([reply(5, auc=math.nan)], "num-examples")

    assert math.isnan(typing.cast(float, merged["auc"]))

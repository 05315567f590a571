"""Flower's own strategies and centered clipping, chosen by name and configured from the run
config."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from common.config import AppConfig, FederationConfig
from server.aggregation import weighted_mean_ignoring_nan
from server.centered_clip import CenteredClipping

StrategyFactory = Callable[..., Strategy]


def _specific_options(config: AppConfig) -> dict[str, dict[str, Any]]:
    fed = config.federation
    adaptive = {"eta": fed.server_eta, "tau": fed.server_tau}
    return {
        "fedavg": {},
        "fedavgm": {
            "server_learning_rate": fed.server_learning_rate,
            "server_momentum": fed.server_momentum,
        },
        "fedprox": {"proximal_mu": config.train.proximal_mu},
        "fedadam": adaptive,
        "fedyogi": adaptive,
        "fedadagrad": adaptive,
        "fedmedian": {},
        "fedtrimmedavg": {"beta": fed.trim_beta},
        "krum": {"num_malicious_nodes": fed.num_malicious_nodes},
        "multikrum": {
            "num_malicious_nodes": fed.num_malicious_nodes,
            "num_nodes_to_select": fed.num_nodes_to_select,
        },
        "bulyan": {"num_malicious_nodes": fed.num_malicious_nodes},
        "centeredclip": {"radius": fed.clip_radius, "iterations": fed.clip_iterations},
    }


STRATEGIES: dict[str, StrategyFactory] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
    "centeredclip": CenteredClipping,
}


# Hospital-level DP: Flower's accountant needs every round to sample exactly
# `num_sampled_clients` (= `min-train-nodes`) hospitals. FedAvg samples
# max(int(connected · fraction_train), min_train_nodes); with the smallest positive
# fraction the first term is 0 for any federation, so the sample is `min-train-nodes`.
FIXED_SAMPLE_FRACTION = sys.float_info.min


def _sampling(fed: FederationConfig, fixed_sample: bool) -> dict[str, Any]:
    return {
        "fraction_train": FIXED_SAMPLE_FRACTION if fixed_sample else fed.fraction_train,
        "fraction_evaluate": fed.fraction_evaluate,
        "min_train_nodes": fed.min_train_nodes,
        "min_evaluate_nodes": fed.min_evaluate_nodes,
        "min_available_nodes": fed.min_available_nodes,
    }


def build_strategy(config: AppConfig) -> Strategy:
    """The Flower strategy named by ``strategy``, with its options from the run config.

    Under hospital-level DP (``dp`` = 'hospital') each round trains exactly
    ``min-train-nodes`` hospitals sampled from those connected; ``fraction-train`` does
    not apply (the DP wrapper itself is added by :func:`server.privacy.with_hospital_dp`).
    """
    name = config.federation.strategy
    return STRATEGIES[name](
        **_sampling(config.federation, fixed_sample=config.privacy.dp == "hospital"),
        **_specific_options(config)[name],
        train_metrics_aggr_fn=weighted_mean_ignoring_nan,
        evaluate_metrics_aggr_fn=weighted_mean_ignoring_nan,
    )

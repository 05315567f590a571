"""The train phase under secure aggregation (``secure-aggregation = true``, SecAgg+).

:func:`secure_train` samples like the plain phase (the strategy's ``configure_train``),
then runs Flower's SecAgg+ workflow (:mod:`server.secagg_workflow`) over the sample. Each
hospital masks ``s · (returned − received weights)``; the coordinator learns only their
weighted mean, ``s · Σ (n_i/MW)·Δ_i / Σ (n_i/MW)``, divides it by ``s`` and adds it to the
global model. The strategy chain (``ValidatingStrategy`` → DP wrapper → FedAvg / FedAdam …)
then gets one synthetic reply per contributor, each holding that same new global model
with the contributor's plaintext metrics (:func:`synthetic_replies`), so server optimizers
and DP accounting work unchanged and never see a single hospital's update.

The scale ``s`` and the max weight ``MW`` of round r are derived from the run's history
(:func:`server.secagg_settings.round_settings`), so a resumed run continues them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common import Scalar
from flwr.serverapp import Grid

from common.config import AppConfig
from common.contract import (
    ARRAYS_KEY,
    CONFIG_KEY,
    DATA_KIND,
    EPSILON_KEY,
    METRICS_KEY,
    SITE_KEY,
    SITE_NAME,
    TRAIN_METRICS,
    WEIGHT_KEY,
    reported_site,
)
from common.secagg_config import SECAGG_MIN_HOSPITALS
from common.secure_aggregation import (
    ARRAY_NAMES_KEY,
    MAX_WEIGHT_KEY,
    RANGE_USE_KEY,
    SCALE_KEY,
)
from server.records import SiteBook
from server.registry import SiteRegistry
from server.round_record import dropouts, json_metrics, named, stage_outcomes, stop_message
from server.secagg_settings import BLOCK_KEY, RoundSettings, check_sum_fits, round_settings
from server.secagg_workflow import STAGES, FedclinicSecAggPlus, WorkflowResult, run_secagg_workflow
from server.train_phase import TrainOutcome, sample_train, train_bytes
from server.validation import ValidatingStrategy

STAGE_TIMEOUT = 60.0
"""Seconds each key stage (setup, share_keys, unmask) may take (at most ``round-timeout``)."""
SATURATION_MARK = "saturat"
"""A hospital's refusal to send a saturating update says so (``client`` side's reason)."""


def apply_mean_update(arrays: ArrayRecord, mean: Sequence[np.ndarray], scale: float) -> ArrayRecord:
    """``arrays + mean / scale``, each array keeping its name and dtype."""
    return ArrayRecord(
        {
            name: Array(
                (array.numpy().astype(np.float64) + np.asarray(update) / scale).astype(
                    array.numpy().dtype
                )
            )
            for (name, array), update in zip(arrays.items(), mean, strict=True)
        }
    )


def reply_metrics(num_examples: int, plaintext: Mapping[str, Scalar], dp: str) -> dict[str, Any]:
    """A contributor's contract train metrics, from what it sent in plaintext."""
    keys = (*TRAIN_METRICS, EPSILON_KEY) if dp == "record" else TRAIN_METRICS
    values: dict[str, Any] = {WEIGHT_KEY: num_examples, **plaintext}
    return {
        key: values[key]
        for key in keys
        if isinstance(values.get(key), int | float) and not isinstance(values[key], bool)
    }


def synthetic_replies(
    sent: Iterable[Message],
    contributors: Mapping[int, tuple[int, Mapping[str, Scalar]]],
    new_global: ArrayRecord,
    dp: str,
) -> list[Message]:
    """One reply per contributor to its own train request: the new global model (the same
    for all), its plaintext metrics and ``site``. No single update is in any of them."""
    replies = []
    for request in sent:
        node_id = request.metadata.dst_node_id
        if node_id not in contributors:
            continue
        num_examples, plaintext = contributors[node_id]
        site: dict[str, Any] = {
            k: plaintext[k] for k in (SITE_NAME, DATA_KIND) if isinstance(plaintext.get(k), str)
        }
        content = RecordDict(
            {
                ARRAYS_KEY: new_global,
                METRICS_KEY: MetricRecord(dict(reply_metrics(num_examples, plaintext, dp))),
                SITE_KEY: ConfigRecord(site),
            }
        )
        replies.append(Message(content, reply_to=request))
    return replies


def train_configs(
    sent: Iterable[Message], names: list[str], settings: RoundSettings
) -> dict[int, ConfigRecord]:
    """Each sampled node's fitins config: its ``configure_train`` config (with the DP
    wrapper's keys) plus the scale, the max weight and the model's array names."""
    extra: dict[str, Any] = {
        SCALE_KEY: settings.scale,
        MAX_WEIGHT_KEY: settings.max_weight,
        ARRAY_NAMES_KEY: names,
    }
    return {
        m.metadata.dst_node_id: ConfigRecord({**m.content.config_records[CONFIG_KEY], **extra})
        for m in sent
    }


def build_workflow(config: AppConfig, max_weight: float) -> FedclinicSecAggPlus:
    fed = config.federation
    return FedclinicSecAggPlus(
        collect_timeout=fed.round_timeout,
        stage_timeout=min(STAGE_TIMEOUT, fed.round_timeout),
        num_shares=fed.secagg_num_shares,
        reconstruction_threshold=fed.secagg_reconstruction_threshold,
        max_weight=max_weight,
        clipping_range=fed.secagg_clipping_range,
        quantization_range=fed.secagg_quantization_range,
    )


def secure_block(
    result: WorkflowResult, sampled: list[int], settings: RoundSettings, config: AppConfig
) -> dict[str, Any]:
    """The round record's ``secure-aggregation`` block."""
    used = [
        float(v)
        for _, metrics in result.contributors.values()
        if isinstance(v := metrics.get(RANGE_USE_KEY), int | float) and math.isfinite(v)
    ]
    saturated = sum(
        SATURATION_MARK in reason.lower() for s in result.stages for reason in s.reasons.values()
    )
    seconds = {stage: 0.0 for stage in STAGES}
    for stage in result.stages:
        seconds[stage.stage] = round(seconds.get(stage.stage, 0.0) + stage.seconds, 3)
    return {
        "scale": settings.scale,
        "max-weight": settings.max_weight,
        "clipping-range": config.federation.secagg_clipping_range,
        "quantization-range": config.federation.secagg_quantization_range,
        "range-use-max": max(used) if used else None,
        "saturated": saturated,
        "contributors": len(result.contributors),
        "dropouts": dropouts(sampled, result.stages),
        "stage-seconds": seconds,
    }


def halt_reason(result: WorkflowResult, too_few: bool) -> str:
    if too_few:
        return f"SecAgg+ needs at least {SECAGG_MIN_HOSPITALS} hospitals in the sum"
    shares, threshold = result.protocol.get("shares"), result.protocol.get("threshold")
    last = result.stages[-1].stage if result.stages else "setup"
    needs = f" ({threshold} of {shares} shares)" if threshold is not None else ""
    return f"SecAgg+ halted at {last}: too few hospitals left to unmask the sum{needs}"


def halt_rule(result: WorkflowResult, too_few: bool) -> str:
    if too_few:
        return (
            f"SecAgg+ aggregates at least {SECAGG_MIN_HOSPITALS} hospitals' updates (with 2, "
            "each could subtract its own update from the sum)"
        )
    shares, threshold = result.protocol.get("shares"), result.protocol.get("threshold")
    return (
        f"SecAgg+ unmasks the sum only while {threshold} of each hospital's {shares} key "
        "shares can be collected (`secagg-reconstruction-threshold`)"
    )


def secure_train(
    grid: Grid,
    strategy: ValidatingStrategy,
    arrays: ArrayRecord,
    server_round: int,
    config: AppConfig,
    book: SiteBook,
    registry: SiteRegistry | None,
    history: Sequence[Mapping[str, Any]] = (),
) -> TrainOutcome:
    """One SecAgg+ train phase over the strategy's sample (see the module docstring)."""
    fed, dp = config.federation, config.privacy.dp
    settings = round_settings(history, config)
    sent = sample_train(grid, strategy, arrays, server_round, config)
    sampled = [m.metadata.dst_node_id for m in sent]
    result = WorkflowResult(None, {}, [])
    if len(sent) >= SECAGG_MIN_HOSPITALS:
        check_sum_fits(len(sent), fed.secagg_quantization_range)
        configs = train_configs(sent, list(arrays.keys()), settings)
        result = run_secagg_workflow(
            grid, build_workflow(config, settings.max_weight), server_round, arrays, configs
        )
    too_few = 0 < len(sent) < SECAGG_MIN_HOSPITALS or (
        result.aggregate is not None and len(result.contributors) < SECAGG_MIN_HOSPITALS
    )
    if too_few:  # never unmask, or use, a sum of fewer than 3 hospitals' updates
        result = replace(result, aggregate=None)
    replies: list[Message] = []
    if result.aggregate is not None:
        new_global = apply_mean_update(arrays, result.aggregate, settings.scale)
        replies = synthetic_replies(sent, result.contributors, new_global, dp)
    new_arrays, metrics = strategy.aggregate_train(server_round, replies)
    for reply in replies:
        site = reported_site(reply.content)
        if site is not None:
            book.learn(reply.metadata.src_node_id, site)
    if registry is not None:
        book.learn_registered(registry.names(grid))
    summed: dict[int, dict[str, Any]] = {
        r.metadata.src_node_id: {"metrics": json_metrics(r.content.metric_records[METRICS_KEY])}
        for r in replies
    }
    for node_id, (_, plaintext) in result.contributors.items():
        used = plaintext.get(RANGE_USE_KEY)
        if node_id in summed and isinstance(used, int | float):
            summed[node_id]["range-use"] = float(used)
    halted = "" if result.aggregate is not None or not sent else halt_reason(result, too_few)
    outcomes = stage_outcomes(
        sampled, result.stages, summed, strategy.rejected(server_round, MessageType.TRAIN), halted
    )
    nodes = named("train", outcomes, book)
    stop = ""
    if new_arrays is None:
        rule = halt_rule(result, too_few) if halted else ""
        stop = stop_message(server_round, nodes, fed.min_train_nodes, dp, rule=rule)
    sizes = train_bytes(
        sum(s.sent_bytes for s in result.stages),
        sum(s.received_bytes for s in result.stages),
        len(sent),
    )
    record = {"train-bytes": sizes}
    if sent:
        record[BLOCK_KEY] = secure_block(result, sampled, settings, config)
    return TrainOutcome(new_arrays, metrics, nodes, record, stop)

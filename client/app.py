"""The ClientApp a hospital runs: train and evaluate the global model on local data.

:func:`build_client_app` is the one way a ClientApp is built: the manifest's
``client.app:app`` and every simulation (``simulations.runner``) use it, so every run
and every test goes through the production mods. Replies hold exactly what
:mod:`common.contract` allows.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client.cache import PROCESS_CACHE
from client.mods import contain_errors, hospital_dp_clipping, only_weights_leave
from client.privacy import (
    SERVER_ROUND,
    PrivacyGate,
    check_train_request,
    hospital_budget,
    ledger_lock,
    plan_round,
)
from client.secagg_transport import compact_masked_vectors, secagg_reply_guard
from client.secure_aggregation import secure_aggregation
from client.simulated_faults import simulated_faults
from client.site import SimulatedSites, resolve_site
from common.config import parse_app_config, parse_train_config
from common.contract import (
    ARRAYS_KEY,
    CONFIG_KEY,
    EPSILON_KEY,
    METRICS_KEY,
    SITE_KEY,
    SPLIT_KEY,
    WEIGHT_KEY,
    evaluate_request_problems,
)
from common.errors import RunError
from common.seeding import derive_seed

__all__ = ["ARRAYS_KEY", "CONFIG_KEY", "METRICS_KEY", "app", "build_client_app"]


def train(msg: Message, context: Context, simulated_sites: SimulatedSites | None) -> Message:
    """Train on the site's data — within the hospital's privacy budget (client.privacy)."""
    config = parse_app_config(context.run_config)
    request = msg.content.config_records[CONFIG_KEY]
    check_train_request(request, config)
    train_config = parse_train_config(dict(request))
    site = resolve_site(context.node_config, config, PROCESS_CACHE, simulated_sites)
    trainer = PROCESS_CACHE.trainer(config.model, config.data.spec())
    server_round = int(str(request.get(SERVER_ROUND, 0)))
    received = msg.content.array_records[ARRAYS_KEY]
    budget = hospital_budget(context.node_config, config, context.state, site.name)
    plan = plan_round(config, train_config, len(site.train), PROCESS_CACHE.calibrated_noise)
    gate = PrivacyGate(budget, site.train)
    with ledger_lock(budget):
        gate.admit(plan)  # raises BudgetExhaustedError: nothing is trained
        result = trainer.fit(
            received.to_numpy_ndarrays(),
            site.train,
            train_config.model_copy(update={"batch_size": plan.batch_size}),
            seed=derive_seed(config.seed, site.name, server_round),
            dp=plan.dp,
        )
        epsilon = gate.record(plan)  # in the ledger before the reply can leave
    arrays = ArrayRecord(
        {name: Array(weights) for name, weights in zip(received, result.weights, strict=True)}
    )
    values: dict[str, int | float | list[int] | list[float]] = {
        WEIGHT_KEY: result.num_examples,
        "loss": result.loss,
        "accuracy": result.accuracy,
    }
    if config.privacy.dp == "record":
        values[EPSILON_KEY] = epsilon
    metrics = MetricRecord(values)
    content = RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: metrics, SITE_KEY: site.record()})
    return Message(content=content, reply_to=msg)


class NoValidationSplitError(RunError):
    """Asked to score the ``val`` split of a hospital that has none."""

    public_reason = "the hospital has no validation split"


def evaluate(msg: Message, context: Context, simulated_sites: SimulatedSites | None) -> Message:
    """Score the global model on the split the request names (``val`` or ``test``)."""
    config = parse_app_config(context.run_config)
    request = msg.content.config_records.get(CONFIG_KEY, ConfigRecord())
    problems = evaluate_request_problems(request)
    if problems:
        raise RunError(f"evaluate request refused: {'; '.join(problems)}")
    site = resolve_site(context.node_config, config, PROCESS_CACHE, simulated_sites)
    split = site.val if request[SPLIT_KEY] == "val" else site.test
    if split is None:
        raise NoValidationSplitError(f"{site.name} has no validation split")
    trainer = PROCESS_CACHE.trainer(config.model, config.data.spec())
    weights = msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
    metrics = trainer.evaluate(weights, split)
    record = MetricRecord({WEIGHT_KEY: len(split), **metrics})
    content = RecordDict({METRICS_KEY: record, SITE_KEY: site.record()})
    return Message(content=content, reply_to=msg)


def build_client_app(
    simulated_sites: SimulatedSites | None = None,
    mods: Sequence[Mod] = (),
    context_mods: Sequence[Mod] = (),
) -> ClientApp:
    """The hospital's ClientApp (plain and SecAgg+ rounds alike).

    ``simulated_sites`` gives simulated hospitals their data (None: the installed entry
    point, see :mod:`client.site`). ``mods`` run inside the privacy mods, next to the
    handlers, so whatever they change is still checked before a reply leaves.
    ``context_mods`` run outside them and only set up the context every mod sees (a
    simulation's run config, :func:`simulations.runner.with_run_config`). Without
    ``simulated_sites`` a simulated node's faults come from the installed entry point
    (:mod:`client.simulated_faults`).

    Mods, outermost first: ``context_mods``, ``contain_errors``, ``secagg_reply_guard``,
    ``compact_masked_vectors`` (the masked vector as uint32), ``secure_aggregation``
    (SecAgg+ train messages only: Flower's ``secaggplus_mod``, then the legacy train
    bridge; see :mod:`client.secure_aggregation`), ``only_weights_leave``, ``mods`` /
    simulated faults; the train handler runs inside ``hospital_dp_clipping``. In
    a SecAgg+ round the chain from ``only_weights_leave`` inward runs once, at the collect
    stage, on the contract's train request: clip, then delta, then mask.
    """

    def on_train(msg: Message, context: Context) -> Message:
        return train(msg, context, simulated_sites)

    def on_evaluate(msg: Message, context: Context) -> Message:
        return evaluate(msg, context, simulated_sites)

    inner = [*mods] if simulated_sites is not None else [*mods, simulated_faults]
    secagg = [secagg_reply_guard, compact_masked_vectors, secure_aggregation]
    outer = [*context_mods, contain_errors, *secagg]
    client_app = ClientApp(mods=[*outer, only_weights_leave, *inner])
    client_app.train(mods=[hospital_dp_clipping])(on_train)
    client_app.evaluate()(on_evaluate)
    return client_app


app = build_client_app()

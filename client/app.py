"""The ClientApp a hospital runs: train and evaluate the global model on local data.

:func:`build_client_app` is the one way a ClientApp is built: the manifest's
``client.app:app`` and every simulation (``simulations.runner``) use it, so every run
and every test goes through the production mods. Replies hold exactly what
:mod:`common.contract` allows.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client.cache import PROCESS_CACHE
from client.mods import contain_errors, only_weights_leave
from client.site import SimulatedSites, resolve_site
from common.config import parse_app_config, parse_train_config
from common.contract import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY, SITE_KEY, WEIGHT_KEY
from common.seeding import derive_seed

__all__ = ["ARRAYS_KEY", "CONFIG_KEY", "METRICS_KEY", "app", "build_client_app"]


def train(msg: Message, context: Context, simulated_sites: SimulatedSites | None) -> Message:
    config = parse_app_config(context.run_config)
    train_config = parse_train_config(dict(msg.content.config_records[CONFIG_KEY]))
    site = resolve_site(context.node_config, config, PROCESS_CACHE, simulated_sites)
    trainer = PROCESS_CACHE.trainer(config.model, config.data.spec())
    server_round = int(str(msg.content.config_records[CONFIG_KEY].get("server-round", 0)))
    received = msg.content.array_records[ARRAYS_KEY]
    result = trainer.fit(
        received.to_numpy_ndarrays(),
        site.train,
        train_config,
        seed=derive_seed(config.seed, site.name, server_round),
    )
    arrays = ArrayRecord(
        {name: Array(weights) for name, weights in zip(received, result.weights, strict=True)}
    )
    metrics = MetricRecord(
        {WEIGHT_KEY: result.num_examples, "loss": result.loss, "accuracy": result.accuracy}
    )
    content = RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: metrics, SITE_KEY: site.record()})
    return Message(content=content, reply_to=msg)


def evaluate(msg: Message, context: Context, simulated_sites: SimulatedSites | None) -> Message:
    config = parse_app_config(context.run_config)
    site = resolve_site(context.node_config, config, PROCESS_CACHE, simulated_sites)
    trainer = PROCESS_CACHE.trainer(config.model, config.data.spec())
    weights = msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
    metrics = trainer.evaluate(weights, site.test)
    record = MetricRecord({WEIGHT_KEY: len(site.test), **metrics})
    content = RecordDict({METRICS_KEY: record, SITE_KEY: site.record()})
    return Message(content=content, reply_to=msg)


def build_client_app(
    simulated_sites: SimulatedSites | None = None, mods: Sequence[Mod] = ()
) -> ClientApp:
    """The hospital's ClientApp.

    ``simulated_sites`` gives simulated hospitals their data (None: the installed entry
    point, see :mod:`client.site`). ``mods`` run inside the privacy mods, next to the
    handlers, so whatever they change is still checked before a reply leaves.
    """

    def on_train(msg: Message, context: Context) -> Message:
        return train(msg, context, simulated_sites)

    def on_evaluate(msg: Message, context: Context) -> Message:
        return evaluate(msg, context, simulated_sites)

    client_app = ClientApp(mods=[contain_errors, only_weights_leave, *mods])
    client_app.train()(on_train)
    client_app.evaluate()(on_evaluate)
    return client_app


app = build_client_app()

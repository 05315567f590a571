"""The ClientApp a hospital runs: train and evaluate the global model on local data."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.cache import PROCESS_CACHE
from client.mods import contain_errors, only_weights_leave
from client.site import resolve_site
from common.config import parse_app_config, parse_train_config
from common.seeding import derive_seed

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"


def train(msg: Message, context: Context) -> Message:
    config = parse_app_config(context.run_config)
    train_config = parse_train_config(dict(msg.content.config_records[CONFIG_KEY]))
    site = resolve_site(context.node_config, config, PROCESS_CACHE)
    trainer = PROCESS_CACHE.trainer(config.model, config.data.spec())
    server_round = int(str(msg.content.config_records[CONFIG_KEY].get("server-round", 0)))
    result = trainer.fit(
        msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays(),
        site.train,
        train_config,
        seed=derive_seed(config.seed, site.name, server_round),
    )
    metrics = MetricRecord(
        {"num-examples": result.num_examples, "loss": result.loss, "accuracy": result.accuracy}
    )
    content = RecordDict({ARRAYS_KEY: ArrayRecord(result.weights), METRICS_KEY: metrics})
    return Message(content=content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    config = parse_app_config(context.run_config)
    site = resolve_site(context.node_config, config, PROCESS_CACHE)
    trainer = PROCESS_CACHE.trainer(config.model, config.data.spec())
    metrics = trainer.evaluate(msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays(), site.test)
    record = MetricRecord({"num-examples": len(site.test), **metrics})
    return Message(content=RecordDict({METRICS_KEY: record}), reply_to=msg)


def build_client_app() -> ClientApp:
    client_app = ClientApp(mods=[contain_errors, only_weights_leave])
    client_app.train()(train)
    client_app.evaluate()(evaluate)
    return client_app


app = build_client_app()

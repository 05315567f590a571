"""The ClientApp pattern of Flower's TensorFlow quickstart, for comparison only.

Every message clears the Keras session, rebuilds and compiles the model and trains with
``model.fit`` — what fedclinic's ClientApp avoids by keeping one ``LocalTrainer`` per
process (client/cache.py). Data are cached as in fedclinic, so the difference measured
is the model's, not the loading's.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.app import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY
from client.cache import PROCESS_CACHE
from client.mods import contain_errors, only_weights_leave
from client.site import resolve_site
from common.config import parse_app_config, parse_train_config
from common.contract import SITE_KEY
from common.metrics import classification_metrics, cross_entropy
from common.models import build_model
from simulations.runner import with_run_config


def _compiled(model_name: str, context: Context, learning_rate: float) -> keras.Model:
    config = parse_app_config(context.run_config)
    model = build_model(model_name, config.data.spec())
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(msg: Message, context: Context) -> Message:
    keras.backend.clear_session()
    config = parse_app_config(context.run_config)
    train_config = parse_train_config(dict(msg.content.config_records[CONFIG_KEY]))
    site = resolve_site(context.node_config, config, PROCESS_CACHE)
    model = _compiled(config.model, context, train_config.learning_rate)
    model.set_weights(msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays())
    history = model.fit(
        site.train.images,
        site.train.labels,
        epochs=train_config.local_epochs,
        batch_size=train_config.batch_size,
        verbose=0,
    )
    metrics = MetricRecord(
        {
            "num-examples": len(site.train),
            "loss": float(history.history["loss"][-1]),
            "accuracy": float(history.history["accuracy"][-1]),
        }
    )
    arrays = ArrayRecord(model.get_weights())
    content = RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: metrics, SITE_KEY: site.record()})
    return Message(content=content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    keras.backend.clear_session()
    config = parse_app_config(context.run_config)
    site = resolve_site(context.node_config, config, PROCESS_CACHE)
    model = _compiled(config.model, context, 1e-3)
    model.set_weights(msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays())
    probabilities = np.asarray(model.predict(site.test.images, verbose=0), dtype=np.float64)
    loss = cross_entropy(site.test.labels, probabilities)
    scores = classification_metrics(site.test.labels, probabilities)
    record = MetricRecord({"num-examples": len(site.test), "loss": loss, **scores})
    content = RecordDict({METRICS_KEY: record, SITE_KEY: site.record()})
    return Message(content=content, reply_to=msg)


def quickstart_client_app(run_config: dict[str, Any]) -> ClientApp:
    app = ClientApp(mods=[with_run_config(run_config), contain_errors, only_weights_leave])
    app.train()(train)
    app.evaluate()(evaluate)
    return app

"""Flower's transport floor: a ClientApp that does no work, for ``benchmarks/deploy.py``.

It answers every message with exactly the message contract (``common/contract.py``) and
constant values: a train reply returns the received arrays unchanged. Served by the
hospital executor in place of the installed ClientApp (:func:`main`), it measures what a
deployed round costs without any training: the SuperNodes' polling, nginx, TLS, the
executor's task handling and the ServerApp's own work.

    python -m benchmarks.noop_app --supernode HOST:PORT --secret-file F --approvals F

Only this benchmark starts it; ``fedclinic site serve`` has no option to replace its app.
"""

from __future__ import annotations

import sys

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from common.contract import (
    ARRAYS_KEY,
    DATA_KIND,
    EVALUATE_METRICS,
    METRICS_KEY,
    SITE_KEY,
    SITE_NAME,
    TRAIN_METRICS,
    WEIGHT_KEY,
)

NUM_EXAMPLES = 1
METRIC_VALUE = 0.5


def constant_metrics(keys: tuple[str, ...]) -> MetricRecord:
    """Every contract metric with a constant value; one example."""
    return MetricRecord({k: NUM_EXAMPLES if k == WEIGHT_KEY else METRIC_VALUE for k in keys})


def site_record(context: Context) -> ConfigRecord:
    return ConfigRecord({SITE_NAME: str(context.node_config["site-name"]), DATA_KIND: "folder"})


def noop_train(msg: Message, context: Context) -> Message:
    content = RecordDict(
        {
            ARRAYS_KEY: msg.content[ARRAYS_KEY],
            METRICS_KEY: constant_metrics(TRAIN_METRICS),
            SITE_KEY: site_record(context),
        }
    )
    return Message(content, reply_to=msg)


def noop_evaluate(msg: Message, context: Context) -> Message:
    content = RecordDict(
        {METRICS_KEY: constant_metrics(EVALUATE_METRICS), SITE_KEY: site_record(context)}
    )
    return Message(content, reply_to=msg)


def noop_client_app() -> ClientApp:
    app = ClientApp()
    app.train()(noop_train)
    app.evaluate()(noop_evaluate)
    return app


def main(argv: list[str]) -> int:
    """``site serve`` with the no-op app: the same executor, approvals and options."""
    import argparse

    from cli.boundary import run_reporting_failures
    from client.executor_cli import add_executor_commands, run_serve

    parser = argparse.ArgumentParser(prog="python -m benchmarks.noop_app")
    add_executor_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *argv])
    return run_reporting_failures(lambda: run_serve(args, app=noop_client_app()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""TensorBoard scalars of every round, in ``<run-dir>/tensorboard/``.

The coordinator calls :meth:`RoundScalars.write` after each round with the round's record
(``server/loop.py::run_round``). Tags: ``<phase>/<metric>`` for the aggregated metrics
(``train/loss``, ``validation/auc``, ``evaluate/auc``, ``central/auc``, ...),
``participation/<status>``, ``round/seconds``, and per hospital
``hospitals/<site-name>/<phase>/<metric>`` from every node that replied ``ok``. Each is a
scalar at step = the round, written with ``tf.summary.write`` and the scalars plugin's
metadata, i.e. what ``tf.summary.scalar`` writes, so the ``tensorboard`` package (needed only to
*view* them: ``tensorboard --logdir runs/``) is not needed to write them.

Writing must never fail a run: the first error is logged as a warning and turns the
scalars off for the rest of the run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.common import log

TENSORBOARD_DIR = "tensorboard"
# Per-node metrics that are not worth a curve (constant across rounds).
SKIPPED_NODE_METRICS = frozenset({"num-examples"})
_UNSAFE_TAG = re.compile(r"[^A-Za-z0-9_.\-]")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _tag_part(text: object) -> str:
    return _UNSAFE_TAG.sub("_", str(text)) or "_"


def round_scalars(record: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The (tag, value) pairs of one round's record, in a stable order."""
    scalars: list[tuple[str, float]] = []
    for section, values in record.items():
        if section == "nodes" or not isinstance(values, Mapping):
            continue
        for metric, value in values.items():
            number = _number(value)
            if number is not None:
                scalars.append((f"{_tag_part(section)}/{_tag_part(metric)}", number))
    seconds = _number(record.get("seconds"))
    if seconds is not None:
        scalars.append(("round/seconds", seconds))
    nodes = record.get("nodes")
    for phase, by_node in nodes.items() if isinstance(nodes, Mapping) else ():
        if not isinstance(by_node, Mapping):
            continue
        for node_id, node in by_node.items():
            if not isinstance(node, Mapping) or node.get("status") != "ok":
                continue
            metrics = node.get("metrics")
            name = _tag_part(node.get("name") or f"node-{node_id}")
            for metric, value in metrics.items() if isinstance(metrics, Mapping) else ():
                number = _number(value)
                if number is not None and metric not in SKIPPED_NODE_METRICS:
                    tag = f"hospitals/{name}/{_tag_part(phase)}/{_tag_part(metric)}"
                    scalars.append((tag, number))
    return scalars


class RoundScalars:
    """One run's event-file writer, opened at the first round written."""

    def __init__(self, run_dir: Path) -> None:
        self.directory = run_dir / TENSORBOARD_DIR
        self._writer: Any = None
        self._metadata: Any = None
        self.enabled = True

    def write(self, record: Mapping[str, Any]) -> None:
        """Write the round's scalars and flush; on any error warn once and stop writing."""
        if not self.enabled:
            return
        try:
            self._write(record)
        except Exception as err:  # scalars are a convenience: the run goes on without them
            self.enabled = False
            log(
                WARNING,
                "[fedclinic] TensorBoard scalars not written from round %s on (%s: %s)",
                record.get("round"),
                type(err).__name__,
                err,
            )

    def _write(self, record: Mapping[str, Any]) -> None:
        import tensorflow as tf

        step = int(record["round"])
        if self._writer is None:
            from tensorflow.core.framework import summary_pb2

            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.directory))
            self._metadata = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
                data_class=summary_pb2.DATA_CLASS_SCALAR,
            )
        with self._writer.as_default(step=step):
            for tag, value in round_scalars(record):
                tf.summary.write(tag, tf.constant(value, dtype=tf.float32), metadata=self._metadata)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

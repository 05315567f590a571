"""The message contract: exactly what a request and a reply between coordinator and hospital hold.

Both sides enforce the same contract. A hospital's ``only_weights_leave`` mod lets a reply
leave only when :func:`reply_violations` finds nothing; the coordinator's
``ValidatingStrategy`` rejects (records, never aggregates) any reply for which it finds
something, so no reply can make a Flower aggregate or consistency check raise.

A reply holds, and nothing else:

- train: the record ``arrays`` (the received model's array names, shapes and dtypes), the
  record ``metrics`` with exactly :data:`TRAIN_METRICS` (plus ``epsilon``, the hospital's
  cumulative ε, when ``dp`` is ``"record"``), and the record ``site``;
- evaluate: the record ``metrics`` with exactly :data:`EVALUATE_METRICS`, and ``site``.

An evaluate request's ``config`` record holds ``server-round`` and :data:`SPLIT_KEY`, the
split to score: ``val`` (each round, to choose the best round) or ``test`` (the reported
scores); nothing else (:func:`evaluate_request_problems`). The reply is the same for both.

``site`` is a config record with exactly :data:`SITE_FIELDS`: the hospital's name (its
``site-name``, ``hospital-N`` in a simulation) and the kind of data it trains on. The
sizes of its data travel as ``num-examples`` (training images in a train reply,
held-out images in an evaluate reply).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from flwr.app import ArrayRecord, MessageType, RecordDict

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
SITE_KEY = "site"
WEIGHT_KEY = "num-examples"

EPSILON_KEY = "epsilon"
TRAIN_METRICS: tuple[str, ...] = (WEIGHT_KEY, "loss", "accuracy")
RECORD_DP_TRAIN_METRICS: tuple[str, ...] = (*TRAIN_METRICS, EPSILON_KEY)
EVALUATE_METRICS: tuple[str, ...] = (
    WEIGHT_KEY,
    "loss",
    "accuracy",
    "auc",
    "sensitivity",
    "specificity",
)
SPLIT_KEY = "split"
EVALUATE_SPLITS: tuple[str, ...] = ("val", "test")
EVALUATE_REQUEST_KEYS: tuple[str, ...] = ("server-round", SPLIT_KEY)
SITE_NAME = "site-name"
DATA_KIND = "data-kind"
SITE_FIELDS: tuple[str, ...] = (SITE_NAME, DATA_KIND)
DATA_KINDS: tuple[str, ...] = (
    "synthetic",
    "medmnist",
    "folder",
    "dicom",
    "simulated-synthetic",
    "simulated-medmnist",
    "simulated-folder",
    "simulated-dicom",
)
SITE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ReplySchema:
    """What one kind of reply must hold: array record or not, exact metric keys."""

    arrays: bool
    metrics: tuple[str, ...]

    @property
    def records(self) -> tuple[str, ...]:
        return ((ARRAYS_KEY,) if self.arrays else ()) + (METRICS_KEY, SITE_KEY)


SCHEMAS: dict[str, ReplySchema] = {
    MessageType.TRAIN: ReplySchema(arrays=True, metrics=TRAIN_METRICS),
    MessageType.EVALUATE: ReplySchema(arrays=False, metrics=EVALUATE_METRICS),
}


def schema_for(message_type: str, dp: str) -> ReplySchema | None:
    """The schema of a ``message_type`` reply in a run whose ``dp`` mode is ``dp``."""
    if message_type == MessageType.TRAIN and dp == "record":
        return ReplySchema(arrays=True, metrics=RECORD_DP_TRAIN_METRICS)
    return SCHEMAS.get(message_type)


def is_scalar(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _names(found: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in sorted(found)) or "none"


def _exact_keys(what: str, found: list[str], expected: tuple[str, ...]) -> str | None:
    if sorted(found) == sorted(expected):
        return None
    missing = [key for key in expected if key not in found]
    extra = [key for key in found if key not in expected]
    parts = [f"missing {_names(missing)}"] if missing else []
    parts += [f"unexpected {_names(extra)}"] if extra else []
    return f"{what}: " + ", ".join(parts)


def _site_problems(content: RecordDict) -> list[str]:
    site = content.config_records.get(SITE_KEY)
    if site is None:
        return []  # reported as a missing record
    problem = _exact_keys(f"record `{SITE_KEY}` keys", list(site), SITE_FIELDS)
    if problem:
        return [problem]
    problems = []
    name, kind = site[SITE_NAME], site[DATA_KIND]
    if not isinstance(name, str) or not SITE_NAME_PATTERN.match(name):
        problems.append(f"`{SITE_KEY}.{SITE_NAME}` is not a site name (letters, digits, . _ -)")
    if kind not in DATA_KINDS:
        problems.append(f"`{SITE_KEY}.{DATA_KIND}` is not one of {', '.join(DATA_KINDS)}")
    return problems


def _metric_problems(content: RecordDict, schema: ReplySchema) -> list[str]:
    metrics = content.metric_records.get(METRICS_KEY)
    if metrics is None:
        return []  # reported as a missing record
    problem = _exact_keys(f"record `{METRICS_KEY}` keys", list(metrics), schema.metrics)
    problems = [problem] if problem else []
    problems.extend(
        f"metric `{name}` is not a scalar number"
        for name, value in metrics.items()
        if not is_scalar(value)
    )
    weight = metrics.get(WEIGHT_KEY)
    if isinstance(weight, int | float) and not (math.isfinite(weight) and weight > 0):
        problems.append(f"metric `{WEIGHT_KEY}` is not a positive number")
    return problems


def array_layout_problem(arrays: ArrayRecord, reference: ArrayRecord) -> str | None:
    """Why ``arrays`` do not have ``reference``'s names, shapes and dtypes (None if they do)."""
    if list(arrays.keys()) != list(reference.keys()):
        return f"array names differ from the model's ({len(arrays)} vs {len(reference)} arrays)"
    for name, array in arrays.items():
        sent = reference[name]
        if tuple(array.shape) != tuple(sent.shape) or array.dtype != sent.dtype:
            return (
                f"array `{name}` is {array.dtype}{list(array.shape)}, "
                f"the model's is {sent.dtype}{list(sent.shape)}"
            )
    return None


def evaluate_request_problems(config: Mapping[str, object]) -> list[str]:
    """Every way an evaluate request's config breaks the contract (empty: none)."""
    problem = _exact_keys(f"record `{CONFIG_KEY}` keys", list(config), EVALUATE_REQUEST_KEYS)
    if problem:
        return [problem]
    if config[SPLIT_KEY] not in EVALUATE_SPLITS:
        return [f"`{SPLIT_KEY}` is not one of {', '.join(EVALUATE_SPLITS)}"]
    return []


def reply_violations(
    message_type: str, content: RecordDict, reference: ArrayRecord | None, dp: str = "off"
) -> list[str]:
    """Every way ``content`` breaks the contract for a ``message_type`` reply (empty: none).

    ``reference`` is the model the request carried (train replies must match its layout);
    ``dp`` is the run's ``dp`` mode (record-level DP adds ``epsilon`` to train metrics).
    """
    schema = schema_for(message_type, dp)
    if schema is None:
        return [f"no reply is allowed to a `{message_type}` message"]
    found = [*content.array_records, *content.metric_records, *content.config_records]
    problem = _exact_keys("records", found, schema.records)
    problems = [problem] if problem else []
    if METRICS_KEY in content and METRICS_KEY not in content.metric_records:
        problems.append(f"record `{METRICS_KEY}` is not a metric record")
    if SITE_KEY in content and SITE_KEY not in content.config_records:
        problems.append(f"record `{SITE_KEY}` is not a config record")
    if schema.arrays and ARRAYS_KEY in content and ARRAYS_KEY not in content.array_records:
        problems.append(f"record `{ARRAYS_KEY}` is not an array record")
    problems += _metric_problems(content, schema)
    problems += _site_problems(content)
    arrays = content.array_records.get(ARRAYS_KEY)
    if schema.arrays and arrays is not None and reference is not None:
        layout = array_layout_problem(arrays, reference)
        if layout:
            problems.append(layout)
    return problems


def reported_site(content: RecordDict) -> Mapping[str, str] | None:
    """A reply's ``site`` record when that record itself is valid, else None.

    The coordinator names a hospital from it even when another part of the reply is
    rejected.
    """
    if SITE_KEY not in content.config_records or _site_problems(content):
        return None
    return site_of(content)


def site_of(content: RecordDict) -> Mapping[str, str]:
    """The ``site`` record of a reply that passed :func:`reply_violations`."""
    return {key: str(value) for key, value in content.config_records[SITE_KEY].items()}

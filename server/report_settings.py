"""The report's settings: what the coordinator decided, and what each hospital reported.

The coordinator's ``dataset`` / ``data-path`` describe only simulated hospitals (the
simulator makes their data from them); a deployed hospital trains on its own data and
reports its kind and size itself. So those keys appear only under "Simulation settings",
and only when hospitals reported a ``simulated-*`` data kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.contract import DATA_KIND, WEIGHT_KEY
from server.records import (
    NAME_MISMATCH,
    PHASES,
    REGISTERED,
    fallback_name,
    has_real_name,
    natural_key,
)

FEDERATION_SETTINGS = (
    "strategy",
    "num-server-rounds",
    "fraction-train",
    "fraction-evaluate",
    "min-train-nodes",
    "min-evaluate-nodes",
    "min-available-nodes",
    "round-timeout",
    "node-wait-timeout",
    "max-update-norm",
)
STRATEGY_SETTINGS: dict[str, tuple[str, ...]] = {
    "fedavgm": ("server-learning-rate", "server-momentum"),
    "fedprox": ("proximal-mu",),
    "fedadam": ("server-eta", "server-tau"),
    "fedyogi": ("server-eta", "server-tau"),
    "fedadagrad": ("server-eta", "server-tau"),
    "fedtrimmedavg": ("trim-beta",),
    "krum": ("num-malicious-nodes",),
    "multikrum": ("num-malicious-nodes", "num-nodes-to-select"),
    "bulyan": ("num-malicious-nodes",),
    "centeredclip": ("clip-radius", "clip-iterations"),
}
LOCAL_TRAINING_SETTINGS = (
    "local-epochs",
    "local-steps",
    "batch-size",
    "learning-rate",
    "local-optimizer",
    "augment",
)
CONTRACT_SETTINGS = (
    "model",
    "class-names",
    "image-size",
    "channels",
    "min-examples",
    "holdout-fraction",
)
PRIVACY_SETTINGS = (
    "dp",
    "dp-epsilon",
    "dp-delta",
    "dp-clip-norm",
    "dp-noise-multiplier",
    "max-epsilon",
)
SECURE_AGGREGATION_SETTINGS = (
    "secure-aggregation",
    "secagg-num-shares",
    "secagg-reconstruction-threshold",
    "secagg-clipping-range",
    "secagg-quantization-range",
)
RUN_SETTINGS = ("seed", "central-eval-path", "checkpoints-keep", "resume")
SIMULATION_SETTINGS = (
    "dataset",
    "data-path",
    "partitioner",
    "dirichlet-alpha",
    "synthetic-examples",
)
# shown only when set: scanner shift, simulated attackers and unreliable hospitals
SHIFT_SETTING = "shift-strength"
ATTACK_SETTINGS = ("attack", "attack-fraction", "attack-scale")
FAULT_SETTINGS = ("dropout-rate", "straggler-rate", "straggler-delay")
SIMULATED_PREFIX = "simulated-"
NOT_REPORTED = "not reported"


def coordinator_settings(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(key, value) of every setting the coordinator decided for this run, in a fixed order.

    The DP settings appear when the run used DP (``dp`` other than 'off'), the SecAgg+
    settings when it used secure aggregation.
    """
    keys = [
        *FEDERATION_SETTINGS,
        *STRATEGY_SETTINGS.get(str(config.get("strategy")), ()),
        *LOCAL_TRAINING_SETTINGS,
        *CONTRACT_SETTINGS,
        *(PRIVACY_SETTINGS if config.get("dp", "off") != "off" else ()),
        *(SECURE_AGGREGATION_SETTINGS if config.get("secure-aggregation") else ()),
        *RUN_SETTINGS,
    ]
    return [(key, config[key]) for key in keys if key in config]


def simulation_settings(
    config: Mapping[str, Any], hospitals: list[dict[str, Any]]
) -> list[tuple[str, Any]]:
    """The simulator's data settings, when (and only when) hospitals were simulated."""
    simulated = any(str(h["data-kind"]).startswith(SIMULATED_PREFIX) for h in hospitals)
    if not simulated:
        return []
    keys = [
        *SIMULATION_SETTINGS,
        *((SHIFT_SETTING,) if config.get(SHIFT_SETTING, 0.0) else ()),
        *(ATTACK_SETTINGS if config.get("attack", "none") != "none" else ()),
        *(
            FAULT_SETTINGS
            if config.get("dropout-rate", 0.0) or config.get("straggler-rate", 0.0)
            else ()
        ),
    ]
    return [(key, config[key]) for key in keys if key in config]


def _examples(outcome: Mapping[str, Any]) -> int | None:
    value = (outcome.get("metrics") or {}).get(WEIGHT_KEY)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def hospitals(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per node ever sampled: what it reported about itself, in name order.

    ``training-images`` / ``held-out-images`` are the ``num-examples`` of its last valid
    train / evaluate reply; ``rounds-trained`` counts its valid training replies.
    ``registry`` is ``None`` without a site registry, else the registry check:
    ``registered``, ``not registered`` or the other names the node reported.
    """
    rows: dict[str, dict[str, Any]] = {}
    for record in rounds:
        for phase in PHASES:
            for node, outcome in record["nodes"][phase].items():
                row = rows.setdefault(
                    node,
                    {
                        "node": node,
                        "name": fallback_name(node),
                        "data-kind": NOT_REPORTED,
                        "training-images": None,
                        "held-out-images": None,
                        "rounds-trained": 0,
                        "registry": None,
                        "reported-names": [],
                    },
                )
                if has_real_name(outcome):
                    row["name"] = outcome["name"]
                if DATA_KIND in outcome:
                    row["data-kind"] = outcome[DATA_KIND]
                _check_registry(row, outcome)
                if outcome["status"] != "ok":
                    continue
                examples = _examples(outcome)
                if phase == "train":
                    row["rounds-trained"] += 1
                    row["training-images"] = examples
                else:
                    row["held-out-images"] = examples
    return sorted(rows.values(), key=lambda row: natural_key(row["name"]))


def _check_registry(row: dict[str, Any], outcome: Mapping[str, Any]) -> None:
    """Fold one node record's registry fields into its hospital row."""
    if REGISTERED not in outcome:
        return
    row["registry"] = "registered" if outcome[REGISTERED] else "not registered"
    reported = outcome.get(NAME_MISMATCH)
    if reported is not None and reported not in row["reported-names"]:
        row["reported-names"].append(reported)


def registry_flag(row: Mapping[str, Any]) -> str:
    """The Hospitals table's registry check: ``ok``, a name mismatch or not registered."""
    if row["registry"] == "not registered":
        return "**not in the site registry**"
    if row["reported-names"]:
        names = ", ".join(f"`{name}`" for name in row["reported-names"])
        return f"**name mismatch**: reported {names}"
    return "ok"


def hospital_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The Hospitals table's header; a ``registry check`` column when the run had a registry."""
    with_registry = any(row.get("registry") is not None for row in rows)
    return HOSPITAL_COLUMNS + (["registry check"] if with_registry else [])


def hospital_table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    def count(value: int | None) -> str:
        return "n/a" if value is None else str(value)

    with_registry = any(row.get("registry") is not None for row in rows)
    return [
        [
            row["name"],
            f"`{row['node']}`",
            row["data-kind"],
            count(row["training-images"]),
            count(row["held-out-images"]),
            str(row["rounds-trained"]),
            *([registry_flag(row)] if with_registry else []),
        ]
        for row in rows
    ]


HOSPITAL_COLUMNS = [
    "hospital",
    "node id",
    "data kind",
    "training images",
    "held-out images",
    "rounds trained",
]

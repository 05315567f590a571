"""Per-node records of a run: outcomes, participation counts and hospital names.

The round loop writes these records into ``metrics.json``; the report and its plots read
them back. Every node is keyed by its Flower node id and carries a ``name``: the
``site-name`` it reported in a reply's ``site`` record (``hospital-N`` in a
simulation), else ``node-<id>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.contract import DATA_KIND, SITE_NAME

STATUSES = ("ok", "failed", "timeout", "rejected")
PHASES = ("train", "evaluate")
NodeRecords = Mapping[str, Mapping[str, Any]]


def participation(nodes: NodeRecords) -> dict[str, int]:
    """How many nodes were sampled, and how many ended in each status."""
    counts = {status: 0 for status in STATUSES}
    for outcome in nodes.values():
        counts[outcome["status"]] += 1
    return {"sampled": len(nodes), **counts}


def fallback_name(node_id: int | str) -> str:
    """The name of a node that never reported one."""
    return f"node-{node_id}"


@dataclass
class SiteBook:
    """What each node reported about itself (name, data kind), remembered across rounds."""

    names: dict[int, str] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)

    def learn(self, node_id: int, site: Mapping[str, str]) -> None:
        self.names[node_id] = site[SITE_NAME]
        self.kinds[node_id] = site[DATA_KIND]

    def learn_rounds(self, rounds: Iterable[Mapping[str, Any]]) -> None:
        """Remember the names recorded in earlier rounds (a resumed run's history)."""
        for node, outcome in reported_nodes(rounds):
            self.names[int(node)] = outcome["name"]
            self.kinds[int(node)] = outcome[DATA_KIND]

    def name(self, node_id: int) -> str:
        return self.names.get(node_id, fallback_name(node_id))

    def describe(self, node_id: int) -> dict[str, str]:
        """The ``name`` (and ``data-kind`` when reported) fields of a node's record."""
        kind = self.kinds.get(node_id)
        return {"name": self.name(node_id), **({DATA_KIND: kind} if kind else {})}


def reported_nodes(rounds: Iterable[Mapping[str, Any]]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """Every node record, in round order, whose node had reported its site."""
    for record in rounds:
        for phase in PHASES:
            for node, outcome in record["nodes"][phase].items():
                if DATA_KIND in outcome and "name" in outcome:
                    yield node, outcome


def names_of(rounds: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Node id → the last name it reported in any round or phase; ``node-<id>`` otherwise."""
    rounds = list(rounds)
    names = {
        node: fallback_name(node)
        for record in rounds
        for phase in PHASES
        for node in record["nodes"][phase]
    }
    names.update({node: outcome["name"] for node, outcome in reported_nodes(rounds)})
    return names


def natural_key(name: str) -> list[Any]:
    """Sort key that puts ``hospital-2`` before ``hospital-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

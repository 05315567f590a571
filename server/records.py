"""Per-node records of a run: outcomes, participation counts and hospital names.

The round loop writes these records into ``metrics.json``; the report and its plots read
them back. Every node is keyed by its Flower node id and carries a ``name``: the name
the coordinator's site registry records for the node's key (run-config ``site-registry``,
:mod:`server.registry`), else the ``site-name`` it reported in a reply's ``site`` record
(``hospital-N`` in a simulation), else ``node-<id>``. With a registry, each record also
says ``registered`` (true/false) and, when the node reported another name than its
registered one, ``name-mismatch`` (the reported name).
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
REGISTERED = "registered"
NAME_MISMATCH = "name-mismatch"


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
    """Who each node is, remembered across rounds.

    ``names`` / ``kinds``: what each node reported about itself; ``registered``: the names
    the coordinator's registry gives nodes (``None``: no registry), which win.
    """

    names: dict[int, str] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    registered: dict[int, str] | None = None
    _warned: set[tuple[int, str]] = field(default_factory=set)

    def learn(self, node_id: int, site: Mapping[str, str]) -> None:
        self.names[node_id] = site[SITE_NAME]
        self.kinds[node_id] = site[DATA_KIND]

    def learn_registered(self, names: Mapping[int, str]) -> None:
        """Add the registry's names (kept when a node later leaves the SuperLink's list)."""
        if self.registered is None:
            self.registered = {}
        self.registered.update(names)

    def learn_rounds(self, rounds: Iterable[Mapping[str, Any]]) -> None:
        """Remember the names recorded in earlier rounds (a resumed run's history)."""
        for record in rounds:
            for phase in PHASES:
                for node, outcome in record["nodes"][phase].items():
                    if DATA_KIND in outcome and "name" in outcome:
                        self.names[int(node)] = outcome.get(NAME_MISMATCH, outcome["name"])
                        self.kinds[int(node)] = outcome[DATA_KIND]
                    if outcome.get(REGISTERED) is True and self.registered is not None:
                        self.registered[int(node)] = outcome["name"]

    def name(self, node_id: int) -> str:
        if self.registered is not None and node_id in self.registered:
            return self.registered[node_id]
        return self.names.get(node_id, fallback_name(node_id))

    def mismatch(self, node_id: int) -> str | None:
        """The name a registered node reported, when it is not its registered name."""
        registered = (self.registered or {}).get(node_id)
        reported = self.names.get(node_id)
        return reported if registered and reported and reported != registered else None

    def describe(self, node_id: int) -> dict[str, Any]:
        """The ``name`` (``data-kind``, ``registered``, ``name-mismatch``) of a node's record."""
        kind = self.kinds.get(node_id)
        fields: dict[str, Any] = {"name": self.name(node_id), **({DATA_KIND: kind} if kind else {})}
        if self.registered is not None:
            fields[REGISTERED] = node_id in self.registered
        if (reported := self.mismatch(node_id)) is not None:
            fields[NAME_MISMATCH] = reported
        return fields

    def new_warnings(self, node_ids: Iterable[int]) -> list[str]:
        """One line per node newly found unregistered or misnamed (each said once a run)."""
        lines = []
        for node_id in node_ids:
            if self.registered is None:
                break
            if (reported := self.mismatch(node_id)) is not None:
                seen = (node_id, f"{NAME_MISMATCH}:{reported}")
                problem = (
                    f"node {node_id} is registered as `{self.registered[node_id]}` "
                    f"but reported the name `{reported}`"
                )
            elif node_id not in self.registered:
                seen = (node_id, "unregistered")
                problem = f"node {node_id} ({self.name(node_id)}) is not in the site registry"
            else:
                continue
            if seen not in self._warned:
                self._warned.add(seen)
                lines.append(f"[fedclinic] {problem}")
        return lines


def has_real_name(outcome: Mapping[str, Any]) -> bool:
    """Does a node record carry a real name (reported, or from the registry)?"""
    return "name" in outcome and (DATA_KIND in outcome or outcome.get(REGISTERED) is True)


def names_of(rounds: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Node id → the last real name any round or phase recorded; ``node-<id>`` otherwise."""
    names: dict[str, str] = {}
    for record in rounds:
        for phase in PHASES:
            for node, outcome in record["nodes"][phase].items():
                if has_real_name(outcome):
                    names[node] = outcome["name"]
                else:
                    names.setdefault(node, fallback_name(node))
    return names


def natural_key(name: str) -> list[Any]:
    """Sort key that puts ``hospital-2`` before ``hospital-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

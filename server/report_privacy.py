"""The report's privacy section: each hospital's ε per round and at the end of the run.

Built from ``metrics.json`` alone. Record-level DP (``privacy.mode`` 'record'): each
hospital reports its own cumulative ε in its train replies (``nodes.train[<node>].metrics
.epsilon``); its final ε is the last one it reported. Hospital-level DP ('hospital'): the
coordinator's accountant gives one ε for the federation (``privacy.epsilon``), and it
bounds what the run reveals about any one hospital's participation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.contract import EPSILON_KEY
from server.records import names_of, natural_key

MODES = {
    "record": "record-level DP (each patient's record; every hospital accounts its own ε)",
    "hospital": "hospital-level DP (each hospital's participation; one ε for the federation)",
}


def privacy_mode(rounds: list[dict[str, Any]]) -> str | None:
    """The run's DP mode as its rounds recorded it (None: the run did not use DP)."""
    for record in rounds:
        privacy = record.get("privacy")
        if isinstance(privacy, Mapping) and privacy.get("mode") in MODES:
            return str(privacy["mode"])
    return None


def _epsilon(outcome: Mapping[str, Any]) -> float | None:
    value = (outcome.get("metrics") or {}).get(EPSILON_KEY)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _hospitals(rounds: list[dict[str, Any]]) -> list[tuple[str, set[str]]]:
    """(name, its node ids) of every hospital ever sampled to train, in name order.

    A hospital keeps its name across a resumed run; its node id may change (a new
    simulation, a re-registered SuperNode)."""
    names = names_of(rounds)
    nodes: dict[str, set[str]] = {}
    for record in rounds:
        for node in record["nodes"]["train"]:
            nodes.setdefault(names[node], set()).add(node)
    return sorted(nodes.items(), key=lambda item: natural_key(item[0]))


def _trained(record: Mapping[str, Any], nodes: set[str]) -> Mapping[str, Any] | None:
    """The hospital's outcome in ``record``'s round when it trained (else None)."""
    for node in nodes:
        outcome = record["nodes"]["train"].get(node, {})
        if outcome.get("status") == "ok":
            return outcome
    return None


def _round_epsilon(record: Mapping[str, Any], nodes: set[str]) -> float | None:
    """The ε that protects the hospital of ``nodes`` after ``record``'s round (None: it
    did not train)."""
    outcome = _trained(record, nodes)
    if outcome is None:
        return None
    privacy = record.get("privacy") or {}
    if privacy.get("mode") == "hospital":
        value = privacy.get("epsilon")
        return float(value) if isinstance(value, int | float) else None
    return _epsilon(outcome)


def hospital_epsilons(rounds: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Hospital name → its cumulative ε after each recorded round (None: not trained).

    Record level: what the hospital reported in a valid train reply. Hospital level: the
    federation's ε, for every round the hospital sent a valid update.
    """
    return {name: [_round_epsilon(r, nodes) for r in rounds] for name, nodes in _hospitals(rounds)}


def federation_epsilons(rounds: list[dict[str, Any]]) -> list[float | None]:
    """``privacy.epsilon`` of each round (hospital level: the accountant's; record level:
    the largest any hospital that trained reported)."""
    values: list[float | None] = []
    for record in rounds:
        epsilon = (record.get("privacy") or {}).get("epsilon")
        values.append(float(epsilon) if isinstance(epsilon, int | float) else None)
    return values


def final_rows(rounds: list[dict[str, Any]]) -> list[list[str]]:
    """(hospital, rounds trained, final ε, δ) for every hospital ever sampled to train."""
    deltas = [r["privacy"].get("delta") for r in rounds if isinstance(r.get("privacy"), dict)]
    delta = f"{deltas[-1]:g}" if deltas and isinstance(deltas[-1], int | float) else "n/a"
    rows = []
    for name, nodes in _hospitals(rounds):
        trained = sum(1 for r in rounds if _trained(r, nodes) is not None)
        spent = [e for e in (_round_epsilon(r, nodes) for r in rounds) if e is not None]
        rows.append([name, str(trained), f"{spent[-1]:.3f}" if spent else "n/a", delta])
    return rows


def privacy_intro(rounds: list[dict[str, Any]], config: Mapping[str, Any]) -> list[str]:
    """The privacy section's opening lines: mode, target and the ε the run reached."""
    mode = privacy_mode(rounds)
    if mode is None:
        return []
    reached = [value for value in federation_epsilons(rounds) if value is not None]
    target = config.get("dp-epsilon")
    lines = [f"Mode: {MODES[mode]}."]
    if isinstance(target, int | float):
        lines.append(f"Target ε for the whole run (`dp-epsilon`): {target:g}.")
    if reached:
        who = "the federation" if mode == "hospital" else "the most-spent hospital"
        lines.append(f"ε after the last recorded round ({who}): {reached[-1]:.3f}.")
    return [" ".join(lines)]

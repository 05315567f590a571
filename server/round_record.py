"""What a round's record says: each sampled hospital's named outcome, the metrics as JSON,
the one-line round summary and the one-line reason a round stopped the run."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from logging import WARNING
from typing import TYPE_CHECKING, Any

from flwr.app import Message, MetricRecord
from flwr.common import log

from common.contract import DATA_KIND, METRICS_KEY, reported_site
from common.text import strip_ansi
from server.checkpoint import checkpoint_remains
from server.records import SiteBook, participation

if TYPE_CHECKING:
    from server.secagg_workflow import StageRecord

REASON_CHARS = 200
UPDATE_NORM_KEY = "update-norm"


def short_reason(reason: str) -> str:
    """A failure reason as one readable line: the last non-empty line, no colours, bounded."""
    lines = [line.strip() for line in strip_ansi(reason).splitlines() if line.strip()]
    text = lines[-1] if lines else "no reason given"
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def json_metrics(record: MetricRecord | None) -> dict[str, float | int | None]:
    """Metrics as JSON-safe numbers: NaN / Inf (undefined) become null."""
    if record is None:
        return {}
    out: dict[str, float | int | None] = {}
    for key, value in record.items():
        if isinstance(value, int | float):
            out[key] = value if math.isfinite(value) else None
    return out


def destinations(sent: Iterable[Message]) -> dict[str, int]:
    """Message ID -> destination node of every pushed message (the grid sets the IDs)."""
    return {m.metadata.message_id: m.metadata.dst_node_id for m in sent if m.metadata.message_id}


def replying_node(reply: Message, sent_to: Mapping[str, int]) -> int:
    """The sampled node ``reply`` answers for. Flower's own error replies (node
    unavailable, reply expired) come from the SuperLink (``src_node_id`` 1), so they are
    matched by the message they reply to; ``sent_to``: :func:`destinations`."""
    return sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)


def _outcome(
    reply: Message,
    node_id: int,
    rejected: Mapping[int, str],
    update_norms: Mapping[int, float],
) -> dict[str, Any]:
    if reply.has_error():
        return {"status": "failed", "reason": short_reason(reply.error.reason or "")}
    if node_id in rejected:
        return {"status": "rejected", "reason": rejected[node_id]}
    outcome: dict[str, Any] = {
        "status": "ok",
        "metrics": json_metrics(reply.content.metric_records[METRICS_KEY]),
    }
    if node_id in update_norms:
        outcome[UPDATE_NORM_KEY] = update_norms[node_id]
    return outcome


def per_node(
    phase: str,
    sent: Iterable[Message],
    replies: Iterable[Message],
    rejected: Mapping[int, str],
    book: SiteBook,
    round_timeout: float,
    update_norms: Mapping[int, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every sampled node's named outcome: ok (with metrics and, for an accepted training
    update, its ``update-norm``), failed, timeout or rejected.

    Each reply with a valid ``site`` record teaches ``book`` the node's name and data kind,
    even when the rest of the reply is rejected.
    """
    sent = list(sent)
    sent_to = destinations(sent)
    outcomes: dict[int, dict[str, Any]] = {
        msg.metadata.dst_node_id: {
            "status": "timeout",
            "reason": f"no reply within `round-timeout` ({round_timeout:g} s)",
        }
        for msg in sent
    }
    for reply in replies:
        node_id = replying_node(reply, sent_to)
        site = None if reply.has_error() else reported_site(reply.content)
        if site is not None:
            book.learn(node_id, site)
        outcomes[node_id] = _outcome(reply, node_id, rejected, update_norms or {})
    return named(phase, outcomes, book)


def named(
    phase: str, outcomes: Mapping[int, dict[str, Any]], book: SiteBook
) -> dict[str, dict[str, Any]]:
    """Each node's outcome under its name (and data kind); every problem logged."""
    for line in book.new_warnings(sorted(outcomes)):
        log(WARNING, "%s", line)
    nodes = {str(node): {**book.describe(node), **outcome} for node, outcome in outcomes.items()}
    for node, outcome in nodes.items():
        if outcome["status"] != "ok":
            who = (
                outcome["name"] if DATA_KIND not in outcome else f"{outcome['name']} (node {node})"
            )
            log(
                WARNING,
                "[fedclinic] %s %s %s: %s",
                phase,
                who,
                outcome["status"],
                outcome["reason"],
            )
    return nodes


BEFORE_MASKING = ("setup", "share_keys")


def first_miss(node_id: int, stages: Sequence[StageRecord]) -> StageRecord | None:
    """The first SecAgg+ stage ``node_id`` was sent and did not answer (None: none)."""
    return next((s for s in stages if s.outcomes.get(node_id, "ok") != "ok"), None)


def _missed(node_id: int, stage: StageRecord) -> dict[str, Any]:
    status = stage.outcomes[node_id]
    if status == "failed":
        reason = short_reason(stage.reasons.get(node_id, ""))
    elif stage.stage == "collect_masked_vectors":
        reason = f"no reply within `round-timeout` ({stage.timeout:g} s)"
    else:
        reason = f"no reply within the SecAgg+ stage timeout ({stage.timeout:g} s)"
    return {"status": status, "stage": stage.stage, "reason": reason}


def stage_outcomes(
    sampled: Iterable[int],
    stages: Sequence[StageRecord],
    contributors: Mapping[int, Mapping[str, Any]],
    rejected: Mapping[int, str],
    halted: str = "",
) -> dict[int, dict[str, Any]]:
    """Every sampled node's SecAgg+ train outcome, from the workflow's stages.

    ``contributors``: node id → what its ok record holds (``metrics``: the plaintext ones),
    for each node whose masked update is in the unmasked sum. ``ok``: its update is in the
    sum (a node that then missed ``unmask`` is still ``ok``, with that stage and reason).
    ``failed`` / ``timeout`` with the ``stage`` it missed. ``rejected``: its plaintext reply
    broke the contract (its update is in the sum all the same). ``failed`` with the
    workflow's last stage and the reason ``halted`` when no sum was unmasked.
    """
    outcomes: dict[int, dict[str, Any]] = {}
    last = stages[-1].stage if stages else "setup"
    for node_id in sampled:
        miss = first_miss(node_id, stages)
        if node_id in rejected:
            reason = f"{rejected[node_id]} (its masked update is in the sum)"
            outcomes[node_id] = {"status": "rejected", "reason": reason}
        elif node_id in contributors:
            outcome: dict[str, Any] = {"status": "ok", **contributors[node_id]}
            if miss is not None:  # only `unmask` can follow a summed update
                late = _missed(node_id, miss)
                outcome |= {"stage": late["stage"], "reason": late["reason"]}
            outcomes[node_id] = outcome
        elif miss is not None:
            outcomes[node_id] = _missed(node_id, miss)
        else:
            outcomes[node_id] = {"status": "failed", "stage": last, "reason": halted}
    return outcomes


def dropouts(sampled: Iterable[int], stages: Sequence[StageRecord]) -> dict[str, int]:
    """How many sampled nodes dropped before masking (``setup`` / ``share_keys``: left out
    of every mask) and after (``collect_masked_vectors`` / ``unmask``)."""
    counts = {"before-masking": 0, "after-masking": 0}
    for node_id in sampled:
        miss = first_miss(node_id, stages)
        if miss is not None:
            counts["before-masking" if miss.stage in BEFORE_MASKING else "after-masking"] += 1
    return counts


STOP_REASONS_SHOWN = 3


def stop_message(
    server_round: int,
    nodes: Mapping[str, Mapping[str, Any]],
    min_train_nodes: int,
    dp: str = "off",
    rule: str = "",
) -> str:
    """One line: how many hospitals sent a valid update, and why the others did not.

    Under hospital-level DP Flower's accountant releases an aggregate only when every
    sampled hospital (exactly ``min-train-nodes``) sent a valid update. ``rule`` replaces
    the rule that stopped the run (SecAgg+'s reconstruction threshold).
    """
    counts = participation(nodes)
    problems = sorted(
        {f"{o['name']} {o['status']}: {o['reason']}" for o in nodes.values() if o["status"] != "ok"}
    )
    shown = "; ".join(problems[:STOP_REASONS_SHOWN])
    more = (
        f" (+{len(problems) - STOP_REASONS_SHOWN} more)"
        if len(problems) > STOP_REASONS_SHOWN
        else ""
    )
    why = f" Why: {shown}{more}." if problems else ""
    rule = rule or (
        f"hospital-level DP aggregates only when all {min_train_nodes} sampled hospitals "
        "(`min-train-nodes`) send a valid update"
        if dp == "hospital"
        else f"`min-train-nodes` is {min_train_nodes}"
    )
    return (
        f"Round {server_round} stopped the run: {counts['ok']} of {counts['sampled']} "
        f"hospitals sent a valid update ({counts['failed']} failed, {counts['timeout']} "
        f"timed out, {counts['rejected']} rejected); {rule}.{why} "
        f"{checkpoint_remains(server_round)}"
    )


def round_summary(record: dict[str, Any], total_rounds: int) -> str:
    def fmt(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
        return " ".join(
            f"{key} {metrics[key]:.4f}" if isinstance(metrics.get(key), float) else f"{key} n/a"
            for key in keys
        )

    counts = record["participation"]
    central = record.get("central")
    central_text = (
        f" | central: {fmt(central, ('loss', 'accuracy', 'auc'))}" if central is not None else ""
    )
    validation = record.get("validation")
    val_text = f" | validation: {fmt(validation, ('loss', 'auc'))}" if validation else ""
    return (
        f"[fedclinic] round {record['round']}/{total_rounds} ({record['seconds']:.1f} s, "
        f"{counts['ok']}/{counts['sampled']} hospitals trained, {counts['failed']} failed, "
        f"{counts['timeout']} timed out, {counts['rejected']} rejected) | train: "
        f"{fmt(record['train'], ('loss', 'accuracy'))}{val_text} | evaluate: "
        f"{fmt(record['evaluate'], ('loss', 'accuracy', 'auc', 'sensitivity', 'specificity'))}"
        f"{central_text}{privacy_text(record.get('privacy'))}"
    )


def privacy_text(privacy: Mapping[str, Any] | None) -> str:
    """`` | ε 2.31 (δ 1e-05)`` for a DP run's round line ("" without DP)."""
    if privacy is None:
        return ""
    epsilon = privacy.get("epsilon")
    shown = f"{epsilon:.2f}" if isinstance(epsilon, int | float) else "n/a"
    return f" | ε {shown} (δ {privacy['delta']:g})"

"""Which sampled node a reply answers for, including Flower's own error replies.

A SuperNode that dies mid-round is answered for by the SuperLink: once its heartbeats
stop, ``pull_messages`` returns a NODE_UNAVAILABLE error reply whose ``src_node_id`` is
the SuperLink's (1), not the node's. ``per_node`` must record it under the dead node.
"""

from __future__ import annotations

import pytest
from flwr.app import Message, RecordDict
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

from server.records import SiteBook
from server.round_record import per_node
from tests.fake_grid import answers

pytestmark = pytest.mark.usefixtures("task_identity")  # Flower stamps replies with it

TIMEOUT = 60.0


def sent_to(node_id: int, message_type: str = "evaluate") -> Message:
    """A message as the grid leaves it after pushing: its ID set to its object ID."""
    message = Message(RecordDict(), dst_node_id=node_id, message_type=message_type)
    message.metadata.__dict__["_message_id"] = message.object_id
    return message


def unavailable(request: Message) -> Message:
    """The SuperLink's reply for a node that stopped heartbeating (Flower's own function)."""
    return create_message_error_unavailable_res_message(request.metadata, "node_unavail")


def test_node_unavailable_reply_is_recorded_under_the_dead_node() -> None:
    # Prepare: node 7 is gone, node 8 never replies, node 9 replies
    sent = [sent_to(7), sent_to(8), sent_to(9)]
    replies = [unavailable(sent[0]), answers(0.1)(sent[2])]

    # Execute
    nodes = per_node("evaluate", sent, replies, {}, SiteBook(), TIMEOUT)

    # Assert
    statuses = {node: outcome["status"] for node, outcome in nodes.items()}
    assert statuses == {"7": "failed", "8": "timeout", "9": "ok"}
    assert replies[0].metadata.src_node_id == 1  # what the fix is about
    assert nodes["7"]["reason"].startswith("Error: Node Unavailable")


def test_replies_without_message_ids_fall_back_to_their_source() -> None:
    # Prepare: an in-memory grid that never assigns message IDs
    request = Message(RecordDict(), dst_node_id=3, message_type="evaluate")

    # Execute
    nodes = per_node("evaluate", [request], [answers(0.2)(request)], {}, SiteBook(), TIMEOUT)

    # Assert
    assert {node: o["status"] for node, o in nodes.items()} == {"3": "ok"}

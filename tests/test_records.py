"""Per-node records: participation counts and hospital names across rounds."""

from __future__ import annotations

from typing import Any

import pytest

from server.records import SiteBook, names_of, natural_key, participation


def outcome(status: str, name: str | None = None) -> dict[str, Any]:
    named = {"name": name, "data-kind": "folder"} if name else {"name": "node-x"}
    return {**named, "status": status}


def round_with(train: dict[str, Any], evaluate: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": {"train": train, "evaluate": evaluate}}


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], {"sampled": 0, "ok": 0, "failed": 0, "timeout": 0, "rejected": 0}),
        (["ok", "ok", "timeout"],
         {"sampled": 3, "ok": 2, "failed": 0, "timeout": 1, "rejected": 0}),
        (["rejected", "failed", "ok", "rejected"],
         {"sampled": 4, "ok": 1, "failed": 1, "timeout": 0, "rejected": 2}),
    ],
)  # fmt: skip
def test_participation_counts_each_status(statuses: list[str], expected: dict[str, int]) -> None:
    nodes = {str(index): outcome(status) for index, status in enumerate(statuses)}

    assert participation(nodes) == expected


def test_site_book_names_known_nodes_and_falls_back_to_the_node_id() -> None:
    book = SiteBook()

    book.learn(7, {"site-name": "st-mary", "data-kind": "folder"})

    assert book.describe(7) == {"name": "st-mary", "data-kind": "folder"}
    assert book.describe(8) == {"name": "node-8"}


def test_site_book_learns_the_names_of_a_resumed_runs_history() -> None:
    rounds = [
        round_with({"1": outcome("ok", "st-mary")}, {"2": outcome("timeout")}),
        round_with({"2": outcome("rejected", "general")}, {}),
    ]
    book = SiteBook()

    book.learn_rounds(rounds)

    assert (book.name(1), book.name(2), book.name(3)) == ("st-mary", "general", "node-3")


def test_names_of_uses_the_last_reported_name_in_any_round_or_phase() -> None:
    rounds = [
        round_with({"1": outcome("failed"), "2": outcome("ok", "b")}, {"3": outcome("timeout")}),
        round_with({"2": outcome("ok", "b2")}, {"1": outcome("rejected", "a")}),
    ]

    assert names_of(rounds) == {"1": "a", "2": "b2", "3": "node-3"}


def test_natural_order_of_hospital_names() -> None:
    names = ["hospital-10", "node-3", "hospital-2", "hospital-1"]

    assert sorted(names, key=natural_key) == ["hospital-1", "hospital-2", "hospital-10", "node-3"]

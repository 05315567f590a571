"""Bounded waits for hospitals, with a fake clock: no real sleeping."""

from __future__ import annotations

import pytest

from common.errors import RunError
from server.waits import BoundedGrid, required_nodes
from tests.factories import app_config
from tests.fake_grid import FakeGrid


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Joining(FakeGrid):
    """One more node connects every time the nodes are listed, up to all of them."""

    def get_node_ids(self) -> list[int]:
        nodes = list(super().get_node_ids())
        self.connected = min(self.connected + 1, len(self.behaviours))
        return nodes


def grid(nodes: int, connected: int) -> FakeGrid:
    return FakeGrid({node: lambda msg: None for node in range(1, nodes + 1)}, connected)


def test_returns_at_once_when_enough_are_connected() -> None:
    clock = FakeClock()

    BoundedGrid(grid(3, 3), 3, 10.0, clock, clock.sleep).wait()

    assert (clock.now, clock.slept) == (100.0, [])


def test_waits_for_late_nodes() -> None:
    clock = FakeClock()
    joining = Joining({node: lambda msg: None for node in range(1, 4)}, connected=1)

    BoundedGrid(joining, 3, 10.0, clock, clock.sleep).wait(poll_seconds=0.5)

    assert clock.slept == [0.5, 0.5]  # listed with 1, 2, then 3 nodes connected


def test_gives_up_at_the_deadline_with_one_line() -> None:
    clock = FakeClock()
    bounded = BoundedGrid(grid(5, 2), 4, 3.0, clock, clock.sleep)

    with pytest.raises(RunError) as caught:
        bounded.wait()

    assert clock.now == pytest.approx(103.0)
    assert str(caught.value) == (
        "Only 2 of the 4 required hospitals connected within `node-wait-timeout` (3 s). "
        "Start more hospitals or lower `min-available-nodes` / `min-train-nodes` / "
        "`min-evaluate-nodes`."
    )


def test_listing_after_the_deadline_raises_so_flowers_own_wait_cannot_spin() -> None:
    clock = FakeClock()
    flaky = grid(3, 3)
    bounded = BoundedGrid(flaky, 3, 5.0, clock, clock.sleep)
    bounded.wait()
    flaky.connected = 2  # a node drops before Flower's sample_nodes lists them again
    clock.now += 6.0

    with pytest.raises(RunError, match="Only 2 of the 3 required hospitals"):
        list(bounded.get_node_ids())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, 2),
        ({"min_available_nodes": 5}, 5),
        ({"min_train_nodes": 6}, 6),
        ({"min_evaluate_nodes": 7}, 7),
        ({"min_evaluate_nodes": 7, "fraction_evaluate": 0.0}, 2),
    ],
)
def test_required_nodes(overrides: dict[str, object], expected: int) -> None:
    assert required_nodes(app_config(**overrides).federation) == expected

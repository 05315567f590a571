"""Bounded waits for hospitals to connect.

Flower's ``sample_nodes`` polls ``grid.get_node_ids()`` once a second until enough nodes
are connected, with no time limit. :class:`BoundedGrid` wraps the real grid for one
``configure_*`` call: :meth:`BoundedGrid.wait` waits (bounded) before the strategy samples,
and ``get_node_ids`` raises :class:`~common.errors.RunError` once the deadline has passed
with too few nodes, so a node that drops between the two cannot make Flower's loop spin
forever either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import INFO

from flwr.common import log
from flwr.serverapp import Grid

from common.config import FederationConfig
from common.errors import RunError
from server.grid_proxy import ProxyGrid

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def required_nodes(fed: FederationConfig) -> int:
    """The fewest connected nodes with which Flower's sampling returns instead of waiting."""
    needed = max(fed.min_available_nodes, fed.min_train_nodes)
    if fed.fraction_evaluate > 0.0:
        needed = max(needed, fed.min_evaluate_nodes)
    return needed


def node_wait_message(connected: int, required: int, timeout: float) -> str:
    return (
        f"Only {connected} of the {required} required hospitals connected within "
        f"`node-wait-timeout` ({timeout:g} s). Start more hospitals or lower "
        "`min-available-nodes` / `min-train-nodes` / `min-evaluate-nodes`."
    )


class BoundedGrid(ProxyGrid):
    """A grid whose node listing gives up ``timeout`` seconds after it was created."""

    def __init__(
        self,
        grid: Grid,
        required: int,
        timeout: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        super().__init__(grid)
        self._required = required
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._deadline = clock() + timeout

    def wait(self, poll_seconds: float = 1.0) -> None:
        """Return once ``required`` nodes are connected; raise at the deadline."""
        logged = -1
        while True:
            nodes = list(self.get_node_ids())
            if len(nodes) >= self._required:
                return
            if len(nodes) != logged:
                log(
                    INFO,
                    "[fedclinic] waiting for hospitals: %d of %d connected (gives up after %g s)",
                    len(nodes),
                    self._required,
                    self._timeout,
                )
                logged = len(nodes)
            self._sleep(min(poll_seconds, max(self._deadline - self._clock(), 0.0)))

    # -- Grid ---------------------------------------------------------------------------
    def get_node_ids(self) -> Iterable[int]:
        nodes = list(self._grid.get_node_ids())
        if len(nodes) < self._required and self._clock() >= self._deadline:
            raise RunError(node_wait_message(len(nodes), self._required, self._timeout))
        return nodes

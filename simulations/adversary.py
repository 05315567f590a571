"""Simulated attackers on the coordinator's side: their train replies, tampered.

In a simulation the update attacks (:data:`common.config.UPDATE_ATTACKS`) are applied
to the attackers' train replies as they arrive, before reply validation and aggregation
(``server.validation.ValidatingStrategy`` calls :class:`SimulatedAdversary` first), so a
defence sees exactly what a malicious hospital would have sent. The adversary sees every
reply of the round: ALIE uses the exact benign mean and std per coordinate (the omniscient
variant robustness papers use). An attacker is recognised by the ``site-name`` its reply
reports (``hospital-N`` = partition N). ``label-flip`` happens in the attackers' data
(:mod:`simulations.hospitals`); here it only names the attackers.

``simulations.runner`` hands :func:`simulated_adversary` to ``server.app.federate``;
``pyproject.toml`` registers it as the entry point ``simulated`` in
``fedclinic.adversaries`` for ``flwr run .`` (the server never imports this package).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, Message
from flwr.serverapp import Grid

from common.config import UPDATE_ATTACKS, AdversaryConfig, AppConfig
from common.contract import ARRAYS_KEY, SITE_NAME, reported_site
from common.seeding import derive_seed
from simulations.attacks import (
    Weights,
    alie,
    alie_z,
    attacker_ids,
    gaussian,
    scaling,
    sign_flip,
)
from simulations.hospitals import hospital_name


def _weights(reply: Message, reference: ArrayRecord) -> Weights | None:
    """A train reply's weights when they are laid out like ``reference`` (else None: the
    reply is left for validation to reject)."""
    if reply.has_error() or ARRAYS_KEY not in reply.content.array_records:
        return None
    record = reply.content.array_records[ARRAYS_KEY]
    if list(record) != list(reference):
        return None
    try:
        weights = record.to_numpy_ndarrays()
    except Exception:  # malformed bytes: validation rejects the reply
        return None
    shapes = [a.shape for a in reference.to_numpy_ndarrays()]
    return weights if [w.shape for w in weights] == shapes else None


def _replace(reply: Message, weights: Weights) -> None:
    names = list(reply.content.array_records[ARRAYS_KEY])
    reply.content.array_records[ARRAYS_KEY] = ArrayRecord(
        {name: Array(np.ascontiguousarray(w)) for name, w in zip(names, weights, strict=True)}
    )


class SimulatedAdversary:
    """Tamper with the attackers' train replies; name the attackers.

    ``count_hospitals`` gives the number of simulated hospitals (partitions); it is asked
    once, when the first replies arrive (by then a simulation has registered every node).
    """

    def __init__(
        self, settings: AdversaryConfig, seed: int, count_hospitals: Callable[[], int]
    ) -> None:
        self.settings = settings
        self.seed = seed
        self._count_hospitals = count_hospitals
        self._attackers: list[str] | None = None

    def attackers(self) -> list[str]:
        """The attacking hospitals' names (``hospital-N``), by partition id."""
        if self._attackers is None:
            ids = attacker_ids(self.seed, self.settings.attack_fraction, self._count_hospitals())
            self._attackers = [hospital_name(i) for i in ids]
        return list(self._attackers)

    def __call__(
        self, server_round: int, replies: Sequence[Message], reference: ArrayRecord
    ) -> list[Message]:
        """``replies`` with every attacker's update replaced (in place) by its attack."""
        replies = list(replies)
        attack = self.settings.attack
        if attack not in UPDATE_ATTACKS:
            return replies
        attackers = set(self.attackers())
        global_weights = reference.to_numpy_ndarrays()
        benign: list[Weights] = []
        attacking: list[tuple[Message, str, Weights]] = []
        for reply in replies:
            weights = _weights(reply, reference)
            site = None if reply.has_error() else reported_site(reply.content)
            if weights is None or site is None:
                continue
            name = site[SITE_NAME]
            if name in attackers:
                attacking.append((reply, name, weights))
            else:
                benign.append(weights)
        for reply, name, weights in attacking:
            tampered = self._attack(
                server_round, name, weights, global_weights, benign, len(attacking)
            )
            if tampered is not None:
                _replace(reply, tampered)
        return replies

    def _attack(
        self,
        server_round: int,
        name: str,
        weights: Weights,
        global_weights: Weights,
        benign: list[Weights],
        num_attackers: int,
    ) -> Weights | None:
        attack, scale = self.settings.attack, self.settings.attack_scale
        if attack == "sign-flip":
            return sign_flip(weights, global_weights, scale)
        if attack == "scaling":
            return scaling(weights, global_weights, scale)
        if attack == "gaussian":
            rng = np.random.default_rng(derive_seed(self.seed, "gaussian", name, server_round))
            return gaussian(global_weights, scale, rng)
        if not benign:  # alie with nothing to imitate: the honest update goes through
            return None
        z = alie_z(len(benign) + num_attackers, num_attackers)
        return alie(benign, z)


def simulated_adversary(config: AppConfig, grid: Grid) -> SimulatedAdversary:
    """The run's adversary; the number of hospitals is the number of nodes ``grid`` has."""
    return SimulatedAdversary(config.adversary, config.seed, lambda: len(list(grid.get_node_ids())))

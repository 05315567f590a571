"""The coordinator's site registry: which hospital each node is, by the key it registered.

``fedclinic pki add-site`` records every site's public key under its name in the PKI's
``sites.json``. The SuperLink knows each node's public key (``flwr supernode register``
stored it; the ServerApp reads it with ``grid.get_nodes()``), so node id → name is a join
on the key, made live each phase: a node registered after the run started is named too.
A node whose key is not in ``sites.json`` (or that has none, as in a simulation) stays
unregistered and keeps the name it reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_der_public_key,
    load_pem_public_key,
    load_ssh_public_key,
)
from flwr.serverapp import Grid

from common.site_keys import key_id, read_site_registry


def node_key(public_key: bytes) -> ec.EllipticCurvePublicKey | None:
    """A SuperLink node's public key (PEM, as Flower 1.42 stores it; DER or OpenSSH too)."""
    if not public_key:
        return None
    for load in (load_pem_public_key, load_der_public_key, load_ssh_public_key):
        try:
            key = load(public_key)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        return key if isinstance(key, ec.EllipticCurvePublicKey) else None
    return None


def registered_names(
    nodes: Iterable[tuple[int, bytes]], sites: Mapping[str, ec.EllipticCurvePublicKey]
) -> dict[int, str]:
    """Node id → the site name recorded with the node's public key; unknown keys left out."""
    by_key = {key_id(key): name for name, key in sites.items()}
    names: dict[int, str] = {}
    for node_id, public_key in nodes:
        key = node_key(public_key)
        name = by_key.get(key_id(key)) if key is not None else None
        if name is not None:
            names[int(node_id)] = name
    return names


@dataclass(frozen=True)
class SiteRegistry:
    """The PKI's ``sites.json``, joined with the nodes the SuperLink reports."""

    sites: Mapping[str, ec.EllipticCurvePublicKey]

    @classmethod
    def load(cls, path: str) -> SiteRegistry | None:
        """The registry at run-config ``site-registry``; ``None`` when it is ``""`` (off)."""
        return cls(read_site_registry(Path(path))) if path else None

    def names(self, grid: Grid) -> dict[int, str]:
        return registered_names(((n.node_id, n.public_key) for n in grid.get_nodes()), self.sites)

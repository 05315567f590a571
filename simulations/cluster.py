"""Which Ray the Simulation Engine uses, and what it reserves for each simulated hospital.

Flower's ``RayBackend`` passes the backend config's ``init_args`` to ``ray.init`` unchanged
(``flwr/server/superlink/fleet/vce/backend/raybackend.py``), so attaching to a running
cluster is ``init_args = {"address": "HOST:PORT"}`` and nothing else: Ray refuses
``num_cpus``/``num_gpus`` when it connects to an existing cluster (the cluster's nodes
declared their resources in ``ray start``). Without an address the run starts a fresh
Ray on this machine: ``address = "local"`` — not Ray's default, which would attach to the
last cluster ``ray start`` recorded on this machine. ``client_resources`` is what Ray
reserves for each hospital's ClientApp actor in either case, and so how many hospitals
train at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from common.errors import ConfigError, invalid_value

RAY_ADDRESS_VARIABLE = "RAY_ADDRESS"
LOCAL = "local"  # Ray's address for "start a new Ray on this machine"
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")
_EXPECTED_ADDRESS = (
    "HOST:PORT of a running Ray cluster's head (`ray start --head --port PORT`), `auto` or `local`"
)


def cluster_address(flag: str | None, environ: Mapping[str, str]) -> str:
    """The Ray address to use: ``--ray-address``, else ``RAY_ADDRESS``, else ``local``.

    ``auto`` (the cluster ``ray start`` last recorded on this machine) is passed on; a
    malformed address is a ConfigError naming where it came from.
    """
    if flag is not None:
        return _checked(flag, "--ray-address")
    from_environment = environ.get(RAY_ADDRESS_VARIABLE, "")
    if from_environment:
        return _checked(from_environment, RAY_ADDRESS_VARIABLE)
    return LOCAL


def _checked(address: str, source: str) -> str:
    if address in (LOCAL, "auto"):
        return address
    match = _HOST_PORT.match(address)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(invalid_value(source, _EXPECTED_ADDRESS, address))
    return address


def checked_resource(key: str, value: float, minimum_exclusive: bool) -> float:
    """A per-hospital Ray resource: > 0 (CPUs) or ≥ 0 (GPUs), whole above 1 (Ray's rule)."""
    low_ok = value > 0 if minimum_exclusive else value >= 0
    if not low_ok or (value > 1 and not float(value).is_integer()):
        bound = "> 0" if minimum_exclusive else "≥ 0"
        raise ConfigError(invalid_value(key, f"a number {bound}, whole when above 1", value))
    return value


def backend_config(
    address: str, cpus_per_hospital: float, gpus_per_hospital: float = 0.0
) -> dict[str, Any]:
    """Flower's Ray backend config: where Ray runs and what each hospital's actor reserves.

    No ``num_cpus``/``num_gpus`` in ``init_args``, ever: a local Ray gets this machine's
    CPUs (Ray's default) and an attached cluster has its own.
    """
    cpus = checked_resource("--cpus-per-hospital", cpus_per_hospital, minimum_exclusive=True)
    gpus = checked_resource("--gpus-per-hospital", gpus_per_hospital, minimum_exclusive=False)
    return {
        "client_resources": {"num_cpus": cpus, "num_gpus": gpus},
        "init_args": {"address": address},
    }

"""Which hospital this node is, from the SuperNode's ``node_config``.

A deployed SuperNode is started with ``--node-config "data-path='...' site-name='...'"``;
a simulated one receives ``partition-id`` and ``num-partitions`` from Flower.

A hospital ships no simulator: the data of a simulated hospital come from a
:data:`SimulatedSites` function the simulation side supplies, either directly to
:func:`client.app.build_client_app` (``python -m simulations``, the tests) or, for the
manifest's ``client.app:app`` under ``flwr run .``, as the installed entry point
``simulated`` in the group :data:`SITE_RESOLVER_GROUP` (declared in ``pyproject.toml``).
The entry point is looked up only when Flower hands the node a ``partition-id``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ConfigRecord, UserConfig

from client.cache import ProcessCache
from common.config import AdversaryConfig, AppConfig, DataConfig
from common.contract import DATA_KIND, SITE_NAME, SITE_NAME_PATTERN
from common.data.schema import SiteData, Split
from common.data.site import data_kind, load_site
from common.errors import ConfigError, invalid_value
from common.plugins import installed_function

SITE_RESOLVER_GROUP = "fedclinic.site_resolvers"
SIMULATED_RESOLVER = "simulated"

SimulatedSites = Callable[[DataConfig, int, int, int, AdversaryConfig], SiteData]
"""``(data, seed, partition_id, num_partitions, adversary)`` → the data of that simulated
hospital (``adversary``: a ``label-flip`` attacker's labels are flipped)."""


@dataclass(frozen=True)
class Site:
    """A hospital's data and what it tells the coordinator about itself."""

    data: SiteData
    kind: str

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def train(self) -> Split:
        return self.data.train

    @property
    def val(self) -> Split | None:
        return self.data.val

    @property
    def test(self) -> Split:
        return self.data.test

    def record(self) -> ConfigRecord:
        """The reply's ``site`` record: exactly the contract's site fields."""
        return ConfigRecord({SITE_NAME: self.name, DATA_KIND: self.kind})


def registered_simulated_sites() -> SimulatedSites:
    """The installed ``simulated`` site resolver; a one-line ConfigError if none is."""
    resolver: SimulatedSites = installed_function(
        SITE_RESOLVER_GROUP,
        SIMULATED_RESOLVER,
        "No simulated hospitals are installed here ({entry}); a hospital needs `data-path` "
        "and `site-name` in its node config.",
    )
    return resolver


def deployed_site_name(node_config: UserConfig) -> str:
    name = node_config.get(SITE_NAME)
    if not isinstance(name, str) or not SITE_NAME_PATTERN.match(name):
        raise ConfigError(
            invalid_value(
                SITE_NAME,
                "the site's name in `--node-config` (1-64 letters, digits, `.`, `_`, `-`)",
                name,
            )
        )
    return name


def resolve_site(
    node_config: UserConfig,
    config: AppConfig,
    cache: ProcessCache,
    simulated_sites: SimulatedSites | None = None,
) -> Site:
    """This node's site; ``simulated_sites`` None means the installed entry point."""
    data, seed = config.data, config.seed
    if "data-path" in node_config:
        path = Path(str(node_config["data-path"])).expanduser()
        name = deployed_site_name(node_config)
        loaded = cache.site(
            ("deployed", str(path), name, data, seed),
            lambda: load_site(
                path, data.spec(), name, data.holdout_fraction, seed, data.val_fraction
            ),
        )
        # data_kind is None only if the data vanished since loading: the contract then
        # blocks the reply (an empty `data-kind`).
        return Site(loaded, data_kind(path) or "")
    if "partition-id" in node_config and "num-partitions" in node_config:
        partition_id = int(node_config["partition-id"])
        num_partitions = int(node_config["num-partitions"])
        load = simulated_sites or registered_simulated_sites()
        adversary = config.adversary
        loaded = cache.site(
            ("simulated", load, partition_id, num_partitions, data, seed, adversary),
            lambda: load(data, seed, partition_id, num_partitions, adversary),
        )
        return Site(loaded, f"simulated-{data.dataset}")
    raise ConfigError(
        "Invalid value for `node-config`. Expected `data-path` and `site-name` for a "
        "hospital, or `partition-id` and `num-partitions` in a simulation. "
        f"Received: {sorted(node_config)}"
    )

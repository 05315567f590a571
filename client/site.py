"""Which hospital this node is, from the SuperNode's ``node_config``.

A deployed SuperNode is started with ``--node-config "data-path='...' site-name='...'"``;
a simulated one receives ``partition-id`` and ``num-partitions`` from Flower.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import UserConfig

from client.cache import ProcessCache
from common.config import AppConfig
from common.data.schema import SiteData
from common.data.site import load_site
from common.errors import ConfigError
from simulations.hospitals import simulated_hospital


def resolve_site(node_config: UserConfig, config: AppConfig, cache: ProcessCache) -> SiteData:
    data, seed = config.data, config.seed
    if "data-path" in node_config:
        path = Path(str(node_config["data-path"])).expanduser()
        name = str(node_config.get("site-name", path.stem))
        return cache.site(
            ("deployed", str(path), name, data, seed),
            lambda: load_site(path, data.spec(), name, data.holdout_fraction, seed),
        )
    if "partition-id" in node_config and "num-partitions" in node_config:
        partition_id = int(node_config["partition-id"])
        num_partitions = int(node_config["num-partitions"])
        return cache.site(
            ("simulated", partition_id, num_partitions, data, seed),
            lambda: simulated_hospital(data, seed, partition_id, num_partitions),
        )
    raise ConfigError(
        "Invalid value for `node-config`. Expected `data-path` (and `site-name`) for a "
        "hospital, or `partition-id` and `num-partitions` in a simulation. "
        f"Received: {sorted(node_config)}"
    )

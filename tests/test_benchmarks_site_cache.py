"""The bound on cached site data that keeps a many-hospital simulation's memory flat
(benchmarks/scale.py measures it; this checks the mechanism without a simulation)."""

from __future__ import annotations

import numpy as np

from client.cache import MAX_CACHED_SITES, ProcessCache
from common.data.schema import SiteData, Split


def _site(name: str) -> SiteData:
    split = Split(np.zeros((1, 28, 28, 1), np.float32), np.zeros(1, np.int64))
    return SiteData(name=name, class_names=("a", "b"), train=split, test=split)


def test_sites_are_loaded_once_while_cached() -> None:
    cache, loads = ProcessCache(max_sites=3), []

    def load(name: str) -> SiteData:
        loads.append(name)
        return _site(name)

    for name in ["h0", "h1", "h0", "h1", "h0"]:
        assert cache.site(name, lambda name=name: load(name)).name == name
    assert loads == ["h0", "h1"]


def test_the_least_recently_used_site_is_dropped_beyond_the_bound() -> None:
    cache, loads = ProcessCache(max_sites=2), []

    def get(name: str) -> None:
        cache.site(name, lambda: loads.append(name) or _site(name))

    for name in ["h0", "h1", "h0", "h2", "h0", "h1"]:
        get(name)
    # h1 was least recently used when h2 arrived; h0 stayed cached throughout
    assert loads == ["h0", "h1", "h2", "h1"]
    assert len(cache._sites) == 2


def test_a_thousand_hospitals_keep_only_the_bound() -> None:
    cache = ProcessCache()
    for hospital in range(1000):
        cache.site(("simulated", hospital), lambda hospital=hospital: _site(f"h{hospital}"))
    assert len(cache._sites) == MAX_CACHED_SITES

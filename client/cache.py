"""The one place a client process keeps state: trainers and site data, built once.

Inside a simulation, Flower calls the ClientApp many times in one Ray actor process
(every hospital routed to it, every round). Rebuilding a Keras model, recompiling and
retracing per message costs more than the training itself, so trainers are kept per
(architecture, input shape, classes) and site data per data source. A deployed Flower 1.42
SuperNode starts a fresh ``flwr-clientapp`` process for every message, so there the cache
lives for one message only (measured in docs/deployment.md's setting: a deployed round is
dominated by that process start and TensorFlow's import).

Site data are kept for the :data:`MAX_CACHED_SITES` most recently served hospitals: a
deployed SuperNode serves one, a simulation process serves every hospital the
Simulation Engine routes to it, which with thousands of virtual hospitals would otherwise
keep every one it ever served (benchmarks/scale.py: +27 MiB per round at 1,000 hospitals).

TensorFlow is imported with the first trainer, quietly (common/quiet.py), not when the
ClientApp module is loaded: a Ray actor or ``flwr-clientapp`` process that loads the app
prints none of TensorFlow's start-up lines.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from common.data.schema import DataSpec, SiteData
from common.quiet import import_keras

if TYPE_CHECKING:
    from client.training import LocalTrainer

MAX_CACHED_SITES = 64


class ProcessCache:
    def __init__(self, max_sites: int = MAX_CACHED_SITES) -> None:
        self._trainers: dict[Hashable, LocalTrainer] = {}
        self._sites: OrderedDict[Hashable, SiteData] = OrderedDict()
        self._max_sites = max_sites
        self._noise: dict[tuple[float, float, int, float | None], float] = {}

    def trainer(self, model_name: str, spec: DataSpec) -> LocalTrainer:
        key = (model_name, spec.input_shape, spec.num_classes)
        if key not in self._trainers:
            import_keras()  # before anything else in this process imports TensorFlow
            from client.training import LocalTrainer
            from common.models import build_model

            self._trainers[key] = LocalTrainer(build_model(model_name, spec))
        return self._trainers[key]

    def calibrated_noise(
        self, epsilon: float, delta: float, releases: int, sampling_rate: float | None
    ) -> float:
        """:func:`common.privacy.calibrate_noise`, computed once per setting (≈1 s each)."""
        key = (epsilon, delta, releases, sampling_rate)
        if key not in self._noise:
            from common.privacy import calibrate_noise

            self._noise[key] = calibrate_noise(epsilon, delta, releases, sampling_rate)
        return self._noise[key]

    def site(self, key: Hashable, load: Callable[[], SiteData]) -> SiteData:
        """The cached site for ``key`` (loading it if needed); the least recently used
        site is dropped once more than ``max_sites`` are held."""
        if key in self._sites:
            self._sites.move_to_end(key)
            return self._sites[key]
        site = self._sites[key] = load()
        while len(self._sites) > self._max_sites:
            self._sites.popitem(last=False)
        return site


PROCESS_CACHE = ProcessCache()

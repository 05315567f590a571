"""The one place a client process keeps state: trainers and site data, built once.

Flower may call a ClientApp many times in one process (every round in a deployment;
every hospital in turn inside a simulation actor). Rebuilding a Keras model, recompiling
and retracing per message costs more than the training itself, so trainers are kept per
(architecture, input shape, classes) and site data per data source.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from client.training import LocalTrainer
from common.data.schema import DataSpec, SiteData
from common.models import build_model


class ProcessCache:
    def __init__(self) -> None:
        self._trainers: dict[Hashable, LocalTrainer] = {}
        self._sites: dict[Hashable, SiteData] = {}

    def trainer(self, model_name: str, spec: DataSpec) -> LocalTrainer:
        key = (model_name, spec.input_shape, spec.num_classes)
        if key not in self._trainers:
            self._trainers[key] = LocalTrainer(build_model(model_name, spec))
        return self._trainers[key]

    def site(self, key: Hashable, load: Callable[[], SiteData]) -> SiteData:
        if key not in self._sites:
            self._sites[key] = load()
        return self._sites[key]

    def clear(self) -> None:
        self._trainers.clear()
        self._sites.clear()


PROCESS_CACHE = ProcessCache()

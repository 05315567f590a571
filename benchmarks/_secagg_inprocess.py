"""One SecAgg+ round in this process, on given hospital updates: what the secure sum is worth.

The two simulations of a setting (plain FedAvg, SecAgg+) train differently (Ray's order,
float sums), so their models cannot tell the aggregation error apart from training noise.
Here the *same* updates go through both: Flower's own ``SecAggPlusWorkflow`` (server) and
``secaggplus_mod`` (every hospital), over an in-memory grid that sends every message
through Flower's protobuf as on the wire, against the plain weighted FedAvg mean of those
updates (float64). ``drop`` hospitals raise at ``collect_masked_vectors``, after they shared
their keys, as a hospital that fails while training would.

Each hospital sends its update ``Δ_i`` times the common scale ``s`` (fedclinic's
``secagg-scale``) and the mod weights it by ``n_i / max-weight``; ``s`` is chosen as
fedclinic's coordinator converges to (:func:`common.secure_aggregation.next_scale`: the
largest weighted, scaled value at 1/8 of ``clipping-range``). :func:`error_bound` is the
worst case of the difference: every hospital's stochastic rounding is below one
quantization step ``2c/Q``, Flower rounds each weight to a multiple of ``1/Q``, and the
server's float64 arithmetic adds a few ulps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from benchmarks._secagg_wire import SecAggSettings, Update, secure_mean
from common.secure_aggregation import next_scale, range_use

FLOAT_ULPS = 16


@dataclass(frozen=True)
class Measurement:
    """One secure round against plain FedAvg of the same updates."""

    hospitals: int
    dropouts: int
    completed: bool
    max_abs_diff: float | None  # None: the round did not complete
    bound: float
    max_abs_update: float
    scale: float
    max_weight: float
    seconds: float
    bytes_per_hospital: int  # every stage's messages, both ways, over `hospitals`


def plain_mean(updates: Sequence[Update], weights: Sequence[float]) -> Update:
    """FedAvg of ``updates`` weighted by ``weights``, in float64."""
    total = float(sum(weights))
    return [
        sum(
            (np.asarray(u[i], np.float64) * (w / total) for u, w in pairs(updates, weights)),
            np.zeros(updates[0][i].shape),
        )
        for i in range(len(updates[0]))
    ]


def pairs(updates: Sequence[Update], weights: Sequence[float]) -> Iterable[tuple[Update, float]]:
    return zip(updates, weights, strict=True)


def max_abs(arrays: Iterable[np.ndarray]) -> float:
    return max((float(np.max(np.abs(a))) for a in arrays if a.size), default=0.0)


def common_scale(updates: Sequence[Update], weights: Sequence[float], clip: float) -> float:
    """The scale fedclinic's coordinator converges to for these updates."""
    largest = max(weights)
    use = max(range_use(u, w / largest, 1.0, clip) for u, w in zip(updates, weights, strict=True))
    return next_scale(1.0, use)


def error_bound(
    updates: Sequence[Update],
    weights: Sequence[float],
    scale: float,
    max_weight: float,
    settings: SecAggSettings,
) -> float:
    """Largest possible |secure mean − plain mean| of ``updates``, all of them in the sum."""
    q_range = settings.quantization_range
    q_ratios = [round(w / max_weight * q_range) for w in weights]
    step = 2.0 * settings.clipping_range / q_range
    # below one step per hospital, plus float64 rounding of a sum within ±k·c (a few ulps)
    summed = len(updates) * (step + FLOAT_ULPS * np.finfo(np.float64).eps * settings.clipping_range)
    rounding = summed / (scale * sum(q_ratios) / q_range)
    exact, used = np.asarray(weights, float), np.asarray(q_ratios, float)
    reweighting = float(np.sum(np.abs(used / used.sum() - exact / exact.sum())))
    return rounding + reweighting * max(max_abs(u) for u in updates)


def measure(
    updates: Sequence[Update],
    weights: Sequence[float],
    dropouts: int = 0,
    settings: SecAggSettings | None = None,
) -> Measurement:
    """Secure vs plain aggregate of ``updates``; the last ``dropouts`` hospitals fail at
    ``collect_masked_vectors`` (the plain mean is then over the others)."""
    settings = settings or SecAggSettings()
    hospitals = len(updates)
    drop = set(range(hospitals - dropouts, hospitals))
    kept = [i for i in range(hospitals) if i not in drop]
    max_weight = float(max(weights))
    scale = common_scale(updates, weights, settings.clipping_range)
    scaled = [[np.asarray(a, np.float64) * scale for a in u] for u in updates]
    started = time.monotonic()
    mean, sent = secure_mean(scaled, weights, drop, settings, max_weight)
    seconds = time.monotonic() - started
    survivors = [updates[i] for i in kept]
    survivor_weights = [weights[i] for i in kept]
    diff = None
    if mean is not None:
        oracle = plain_mean(survivors, survivor_weights)
        pairs = zip(mean, oracle, strict=True)
        diff = max_abs(np.asarray(s, np.float64) / scale - o for s, o in pairs)
    return Measurement(
        hospitals=hospitals,
        dropouts=dropouts,
        completed=mean is not None,
        max_abs_diff=diff,
        bound=error_bound(survivors, survivor_weights, scale, max_weight, settings),
        max_abs_update=max(max_abs(u) for u in updates),
        scale=scale,
        max_weight=max_weight,
        seconds=seconds,
        bytes_per_hospital=round(sent / hospitals),
    )


def measurement_json(measurement: Measurement) -> dict[str, Any]:
    return asdict(measurement)


def keras_updates(overrides: dict[str, Any], hospitals: int) -> tuple[list[Update], list[float]]:
    """The updates (float64) and training-set sizes of ``hospitals`` simulated hospitals of
    the run config ``overrides``, each after one local step from the same initial model:
    the model's real shapes and magnitudes, at a fraction of a round's cost."""
    import keras

    from client.training import LocalTrainer
    from common.config import parse_app_config, parse_train_config
    from common.models import build_model
    from common.seeding import derive_seed
    from server.loop import train_config_record
    from simulations.hospitals import simulated_hospital
    from simulations.runner import run_config_with

    plain = {k: v for k, v in overrides.items() if not k.startswith(("secure-", "secagg-"))}
    config = parse_app_config(run_config_with({**plain, "local-steps": 1}))
    keras.utils.set_random_seed(config.seed)
    trainer = LocalTrainer(build_model(config.model, config.data.spec()))
    initial = trainer.model.get_weights()
    train_config = parse_train_config(dict(train_config_record(config)))
    updates, sizes = [], []
    for index in range(hospitals):
        site = simulated_hospital(config.data, config.seed, index, hospitals)
        seed = derive_seed(config.seed, site.name, 1)
        result = trainer.fit(initial, site.train, train_config, seed)
        pairs = zip(initial, result.weights, strict=True)
        updates.append([new.astype(np.float64) - old.astype(np.float64) for old, new in pairs])
        sizes.append(float(result.num_examples))
    return updates, sizes

"""Round overhead: the Flower Simulation Engine against the compute floor.

The same simulated hospitals (the MedMNIST file split as in ``simulations/hospitals.py``)
and the same local training run

(a) back to back in this process with one persistent ``LocalTrainer`` — the compute floor:
    every hospital trains from the global weights, FedAvg averages, every hospital evaluates;
(b) through Flower's Simulation Engine with fedclinic's ClientApp (one run per
    ``--cpus-per-hospital`` value: Ray starts ``cores / cpus-per-hospital`` actors);
(c) through the Simulation Engine with the pattern of Flower's TensorFlow quickstart
    (clear the Keras session, rebuild and compile the model, ``model.fit`` per message).

Seconds per round are the ServerApp's own round times (``metrics.json``: send, train,
aggregate, evaluate); "steady" is the mean over rounds 2..N, round 1 (actor start-up,
data loading, tracing) is shown on its own, and "wall" includes starting Ray.

Example: ``python -m benchmarks.overhead --hospitals 10 --rounds 5 --out overhead.json``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    add_federation_args,
    existing_data,
    load_average,
    log,
    machine,
    medmnist_overrides,
    run_simulation_child,
    write_json,
)
from common.text import markdown_table as table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_federation_args(parser, rounds=5, out="overhead.json")
    parser.add_argument(
        "--cpus-per-hospital",
        default="1,2",
        help="comma-separated Ray CPUs per ClientApp actor to try for (b); (c) uses the first",
    )
    parser.add_argument("--skip-quickstart", action="store_true", help="do not run (c)")
    parser.add_argument(
        "--quickstart-rounds", type=int, default=3, help="rounds for (c), which is slow (≥ 2)"
    )
    parser.add_argument(
        "--skip-floor-again",
        action="store_true",
        help="measure (a) only before the simulations (by default also after; the ratio "
        "uses the mean of both, since other load on the machine drifts)",
    )
    return parser.parse_args(argv)


def overrides_for(args: argparse.Namespace) -> dict[str, Any]:
    return medmnist_overrides(args, "fedavg")


def compute_floor(overrides: dict[str, Any], hospitals: int) -> list[float]:
    """Seconds of each round with every hospital's work done back to back in this process."""
    import keras
    import numpy as np

    from client.training import LocalTrainer
    from common.config import parse_app_config, parse_train_config
    from common.models import build_model
    from common.seeding import derive_seed
    from server.loop import train_config_record
    from simulations.hospitals import simulated_hospital
    from simulations.runner import run_config_with

    config = parse_app_config(run_config_with(overrides))
    spec = config.data.spec()
    sites = [simulated_hospital(config.data, config.seed, i, hospitals) for i in range(hospitals)]
    keras.utils.set_random_seed(config.seed)
    weights = build_model(config.model, spec).get_weights()
    trainer = LocalTrainer(build_model(config.model, spec))
    train_config = parse_train_config(dict(train_config_record(config)))
    seconds = []
    for server_round in range(1, config.federation.num_server_rounds + 1):
        started = time.monotonic()
        results = [
            trainer.fit(
                weights, site.train, train_config, derive_seed(config.seed, site.name, server_round)
            )
            for site in sites
        ]
        total = sum(result.num_examples for result in results)
        weights = [
            np.sum(
                [r.weights[i] * (r.num_examples / total) for r in results], axis=0, dtype=np.float32
            )
            for i in range(len(weights))
        ]
        for site in sites:
            trainer.evaluate(weights, site.test)
        seconds.append(time.monotonic() - started)
        log(f"floor round {server_round}: {seconds[-1]:.2f} s")
    return seconds


def summary(name: str, seconds: list[float], wall: float | None, **extra: Any) -> dict[str, Any]:
    steady = seconds[1:] if len(seconds) > 1 else seconds
    return {
        "name": name,
        "seconds_per_round": statistics.fmean(steady),
        "first_round_seconds": seconds[0],
        "all_rounds_mean_seconds": statistics.fmean(seconds),
        "round_seconds": [round(s, 3) for s in seconds],
        "wall_seconds": wall,
        **extra,
    }


def measure_floor(label: str, overrides: dict[str, Any], hospitals: int) -> dict[str, Any]:
    """Run the compute floor once and summarise it (load average read before it starts)."""
    load = load_average()
    started = time.monotonic()
    seconds = compute_floor(overrides, hospitals)
    return summary(label, seconds, time.monotonic() - started, cpus=None, load_before=load)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = existing_data(args.data)
    if data is None:
        return 2
    if args.rounds < 2:
        print("error: --rounds must be ≥ 2 (round 1 is start-up)", file=sys.stderr)
        return 2
    cpus_options = [float(value) for value in args.cpus_per_hospital.split(",") if value]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedclinic-overhead-")).resolve()
    overrides = overrides_for(args)
    variants: list[dict[str, Any]] = []

    variants.append(measure_floor("(a) compute floor, one process", overrides, args.hospitals))
    runs = [("fedclinic", cpus) for cpus in cpus_options]
    if not args.skip_quickstart:
        runs.append(("quickstart", cpus_options[0]))
    for client, cpus in runs:
        label = (
            f"(b) Simulation Engine, fedclinic ClientApp, {cpus:g} CPU/hospital"
            if client == "fedclinic"
            else f"(c) Simulation Engine, TF-quickstart pattern, {cpus:g} CPU/hospital"
        )
        log(f"running {label}")
        load = load_average()
        rounds = args.rounds if client == "fedclinic" else max(2, args.quickstart_rounds)
        run = run_simulation_child(
            {**overrides, "num-server-rounds": rounds},
            args.hospitals,
            cpus,
            work / f"{client}-cpus{cpus:g}",
            client=client,
        )
        seconds = [float(r["seconds"]) for r in run.metrics()["rounds"]]
        variants.append(
            summary(label, seconds, run.wall_seconds, cpus=cpus, client=client, load_before=load)
        )
        log(f"{label}: rounds {seconds}, wall {run.wall_seconds:.1f} s")

    if not args.skip_floor_again:
        log("compute floor again, after the simulations")
        variants.append(
            measure_floor("(a) compute floor again, after (b) and (c)", overrides, args.hospitals)
        )
    floors = [v for v in variants if v["cpus"] is None]
    floor_steady = statistics.fmean(v["seconds_per_round"] for v in floors)
    floor_all = statistics.fmean(v["all_rounds_mean_seconds"] for v in floors)
    for variant in variants:
        variant["ratio"] = variant["seconds_per_round"] / floor_steady
        variant["ratio_all_rounds"] = variant["all_rounds_mean_seconds"] / floor_all
    engine = [v for v in variants if v.get("client") == "fedclinic"]
    best = min(engine, key=lambda v: v["seconds_per_round"]) if engine else None
    rows = [
        [
            v["name"],
            v["seconds_per_round"],
            v["first_round_seconds"],
            v["wall_seconds"],
            v["ratio"],
            v["ratio_all_rounds"],
            v["load_before"],
        ]
        for v in variants
    ]
    print(
        f"\nRound overhead: {args.hospitals} hospitals, {args.rounds} rounds, "
        f"{args.local_epochs} local epoch(s), model {args.model}, alpha {args.alpha}\n"
    )
    print(
        table(
            [
                "variant",
                "s/round (2..N)",
                "round 1 s",
                "wall s",
                "ratio vs (a)",
                "ratio, all rounds",
                "load avg",
            ],
            rows,
        )
    )
    if best is not None:
        verdict = "met" if best["ratio"] <= 1.3 else "missed"
        print(
            f"\nratio (b)/(a) = {best['ratio']:.2f} with {best['cpus']:g} CPU/hospital "
            f"(target ≤ 1.3: {verdict}); (a) = mean of the floor runs; load avg = the "
            "machine's 1-minute load average when the variant started"
        )
    write_json(
        Path(args.out),
        {
            "benchmark": "overhead",
            "machine": machine(),
            "settings": {**vars(args), "overrides": overrides},
            "floor_seconds_per_round": floor_steady,
            "simulation_seconds_per_round": best["seconds_per_round"] if best else None,
            "ratio": best["ratio"] if best else None,
            "variants": variants,
        },
    )
    print(f"wrote {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale: many virtual hospitals, a few sampled per round, on one machine.

For each ``--hospitals`` value (default 1,000 then 10,000) one Flower Simulation Engine
run samples ``--sampled`` hospitals per round for training and for evaluation
(``fraction-train = fraction-evaluate = sampled / hospitals`` and the min-nodes settings
equal to ``sampled``), for ``--rounds`` rounds, on the synthetic dataset (each hospital
generates its own images from the seed, so no file is split 10,000 ways).

Reported per run: seconds per round, seconds outside rounds (starting Ray, registering
the nodes, saving the final model and report, shutting down),
peak memory, and memory after every round, all of the whole process tree (the simulation
process, Ray's GCS/raylet and every worker): RSS summed over processes (a shared page
counts in every process that maps it, as ``ps`` shows) and PSS (shared pages split between the
processes sharing them: what the tree really holds). Growth is from the end of round 5 to
the end of the last round; the target is < 10%.

Example: ``python -m benchmarks.scale --hospitals 1000,10000 --rounds 20 --out scale.json``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    load_average,
    log,
    machine,
    run_simulation_child,
    write_json,
)
from common.text import markdown_table as table

GROWTH_FROM_ROUND = 5
TARGET_GROWTH = 0.10
MACHINE_GIB = 24


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--hospitals", default="1000,10000", help="comma-separated virtual hospital counts"
    )
    parser.add_argument("--sampled", type=int, default=10, help="hospitals sampled per round")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--model", default="cnn-small", choices=["cnn", "cnn-small"])
    parser.add_argument(
        "--synthetic-examples", type=int, default=300, help="mean training images per hospital"
    )
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--cpus-per-hospital", type=float, default=1.0, help="Ray CPUs per actor")
    parser.add_argument("--work-dir", default="", help="run directories (default: a temp dir)")
    parser.add_argument("--out", default="scale.json", help="JSON results file")
    return parser.parse_args(argv)


def overrides_for(args: argparse.Namespace, hospitals: int) -> dict[str, Any]:
    fraction = min(1.0, args.sampled / hospitals)
    return {
        "dataset": "synthetic",
        "synthetic-examples": args.synthetic_examples,
        "model": args.model,
        "num-server-rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "strategy": "fedavg",
        "fraction-train": fraction,
        "fraction-evaluate": fraction,
        "min-train-nodes": args.sampled,
        "min-evaluate-nodes": args.sampled,
        "min-available-nodes": args.sampled,
    }


def measure(args: argparse.Namespace, hospitals: int, work: Path) -> dict[str, Any]:
    overrides = overrides_for(args, hospitals)
    load = load_average()
    run = run_simulation_child(
        overrides,
        hospitals,
        args.cpus_per_hospital,
        work / f"hospitals-{hospitals}",
        watch_memory=True,
    )
    rounds = run.metrics()["rounds"]
    seconds = [float(r["seconds"]) for r in rounds]
    trained = [
        sum(1 for node in r["nodes"]["train"].values() if node["status"] == "ok") for r in rounds
    ]
    memory = run.memory.rounds
    base = min(GROWTH_FROM_ROUND, len(memory)) - 1
    growth = {
        key: (memory[-1][key] - memory[base][key]) / memory[base][key]
        for key in ("rss_mib", "pss_mib")
    }
    return {
        "hospitals": hospitals,
        "sampled_per_round": args.sampled,
        "rounds": len(rounds),
        "hospitals_trained_per_round": trained,
        "seconds_per_round": statistics.fmean(seconds[1:] if len(seconds) > 1 else seconds),
        "first_round_seconds": seconds[0],
        "round_seconds": [round(s, 3) for s in seconds],
        "wall_seconds": run.wall_seconds,
        "seconds_outside_rounds": run.wall_seconds - sum(seconds),  # start-up, final save, exit
        "peak_rss_mib": run.memory.peak["rss_mib"],
        "peak_pss_mib": run.memory.peak["pss_mib"],
        "memory_by_round": [
            {
                "round": m["round"],
                "rss_mib": round(m["rss_mib"], 1),
                "pss_mib": round(m["pss_mib"], 1),
                "simulation_process_pss_mib": round(m["root_pss_mib"], 1),
                "processes": int(m["processes"]),
            }
            for m in memory
        ],
        "growth_from_round": base + 1,
        "rss_growth": growth["rss_mib"],
        "pss_growth": growth["pss_mib"],
        "growth_target_met": max(growth.values()) < TARGET_GROWTH,
        "fits_in_machine": run.memory.peak["rss_mib"] < MACHINE_GIB * 1024,
        "load_average_before": load,
        "overrides": overrides,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(value) for value in args.hospitals.split(",") if value]
    if args.rounds < GROWTH_FROM_ROUND + 1:
        print(f"error: --rounds must be > {GROWTH_FROM_ROUND}", file=sys.stderr)
        return 2
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedclinic-scale-")).resolve()
    results = []
    out = Path(args.out)
    for hospitals in counts:
        log(f"scale: {hospitals} hospitals, {args.sampled} per round, {args.rounds} rounds")
        results.append(measure(args, hospitals, work))
        log(f"scale: {hospitals} hospitals: {results[-1]['round_seconds']}")
        payload = {
            "benchmark": "scale",
            "machine": machine(),
            "settings": vars(args),
            "runs": results,
        }
        write_json(out, payload)  # after every run: a later, larger run may not finish

    print(
        f"\nScale: {args.sampled} hospitals sampled per round, {args.rounds} rounds, model "
        f"{args.model}, synthetic data ~{args.synthetic_examples} training images/hospital, "
        f"{args.cpus_per_hospital:g} CPU per Ray actor\n"
    )
    print(
        table(
            [
                "hospitals",
                "s/round (2..N)",
                "round 1 s",
                "outside rounds s",
                "peak RSS MiB",
                "peak PSS MiB",
                "load avg",
                f"RSS r{GROWTH_FROM_ROUND}→last",
                f"PSS r{GROWTH_FROM_ROUND}→last",
            ],
            [
                [
                    r["hospitals"],
                    r["seconds_per_round"],
                    r["first_round_seconds"],
                    r["seconds_outside_rounds"],
                    r["peak_rss_mib"],
                    r["peak_pss_mib"],
                    r["load_average_before"],
                    f"{100 * r['rss_growth']:+.1f}%",
                    f"{100 * r['pss_growth']:+.1f}%",
                ]
                for r in results
            ],
        )
    )
    for r in results:
        print(f"\nMemory after each round, {r['hospitals']} hospitals (MiB):")
        print(
            table(
                ["round", "RSS", "PSS", "PSS of simulation process", "processes"],
                [
                    [
                        m["round"],
                        m["rss_mib"],
                        m["pss_mib"],
                        m["simulation_process_pss_mib"],
                        m["processes"],
                    ]
                    for m in r["memory_by_round"]
                ],
            )
        )
    print(f"wrote {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

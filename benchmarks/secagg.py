"""Secure aggregation (SecAgg+): what it costs against plain FedAvg, and what it is worth.

For each ``--hospitals`` count (default 5, 10, 20) two Flower simulations of the same
federation run in a child process each (synthetic hospitals unless ``--data``): plain
FedAvg and ``secure-aggregation = true``. From each run's ``metrics.json``: seconds per
round (the mean of rounds 2..N: round 1 pays Ray's and TensorFlow's cold start), bytes per
hospital per round (``train-bytes`` sent + received over the sampled hospitals, every
SecAgg+ stage included, mean over rounds), dropouts (the most hospitals that failed or
timed out in a round), and whether every round completed. The ratios SecAgg+ / plain are
taken at 10 hospitals.

The two runs train differently (Ray's order, float sums), so their models cannot measure
the aggregation error. ``max_abs_diff`` therefore comes from one round in this process
(``benchmarks._secagg_inprocess``): every hospital's update from one local Keras step,
aggregated by Flower's ``SecAggPlusWorkflow`` / ``secaggplus_mod`` and by plain weighted
FedAvg, next to the worst-case quantization bound.

Dropout row: 30 % of ``--dropout-hospitals`` (halves up: 3 of 10) fail after sharing
their keys, at ``collect_masked_vectors``. ``--dropout-row simulation`` (default) runs it
with ``dropout-rate = 0.3`` and a seed from ``--seed`` on for which exactly that many
hospitals drop in every round; ``in-process`` (or when no such seed exists) makes exactly
those hospitals fail in the in-process round (its seconds and bytes are then that round's
aggregation alone, without training). The JSON says which (``dropout_row``).

Example: ``python -m benchmarks.secagg --out secagg.json`` (``--hospitals 5 --rounds 2
--dropout-hospitals 5`` runs a slice).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    add_federation_args,
    existing_data,
    log,
    machine,
    medmnist_overrides,
    run_simulation_child,
    write_json,
)
from benchmarks._secagg_rows import (
    COLLECT_STAGE,
    DROPOUT_FRACTION,
    dropouts_for,
    exact_dropout_seed,
    goals,
    ratio_setting,
    ratios,
    report,
    result_row,
    run_summary,
)
from common.errors import invalid_value

# (run config overrides, hospitals, run directory) -> that run's metrics.json; tests fake it
RunFn = Callable[[dict[str, Any], int, Path], dict[str, Any]]
# (run config overrides, hospitals, dropouts) -> benchmarks._secagg_inprocess measurement
MeasureFn = Callable[[dict[str, Any], int, int], dict[str, Any]]
PROG = "python -m benchmarks.secagg"
MIN_HOSPITALS = 3  # SecAgg+ needs min-train-nodes ≥ 3


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        conflict_handler="resolve",
    )
    add_federation_args(parser, rounds=3, out="secagg.json")
    parser.add_argument("--data", default="", help="MedMNIST .npz (default: synthetic data)")
    parser.add_argument("--hospitals", default="5,10,20", help="comma-separated hospital counts")
    parser.add_argument(
        "--dropout-hospitals", type=int, default=10, help="hospitals of the dropout row (0: none)"
    )
    parser.add_argument("--dropout-row", choices=["simulation", "in-process"], default="simulation")
    parser.add_argument("--seed", type=int, default=42, help="run seed (dropout row: from here)")
    parser.add_argument("--cpus-per-hospital", type=float, default=1.0, help="Ray CPUs per actor")
    args = parser.parse_args(argv)
    args.hospital_counts = hospital_counts(args.hospitals)
    if args.rounds < 2:
        expected = "an integer ≥ 2 (round 1 pays the cold start)"
        raise SystemExit(invalid_value("--rounds", expected, args.rounds))
    survivors = args.dropout_hospitals - dropouts_for(args.dropout_hospitals)
    if args.dropout_hospitals != 0 and survivors < MIN_HOSPITALS:  # 30 % of 3 leaves 2
        expected = "0 (no dropout row) or an integer ≥ 4"
        raise SystemExit(invalid_value("--dropout-hospitals", expected, args.dropout_hospitals))
    return args


def hospital_counts(text: str) -> list[int]:
    """``"5,10,20"`` → ``[5, 10, 20]``: distinct integers ≥ 3."""
    expected = f"comma-separated distinct integers ≥ {MIN_HOSPITALS}"
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise SystemExit(invalid_value("--hospitals", expected, text)) from None
    if any(n < MIN_HOSPITALS for n in counts) or len(set(counts)) != len(counts):
        raise SystemExit(invalid_value("--hospitals", expected, text))
    return counts


def base_overrides(args: argparse.Namespace, data: Path | None) -> dict[str, Any]:
    """Every run's config: FedAvg, ``--model``, ``--rounds``, ``--local-epochs``, ``--seed``."""
    common = {
        "num-server-rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "model": args.model,
        "strategy": "fedavg",
        "seed": args.seed,
    }
    if data is None:
        return {**common, "dataset": "synthetic"}
    return {**medmnist_overrides(args, "fedavg"), **common, "data-path": str(data)}


def setting_overrides(
    base: dict[str, Any], hospitals: int, secagg: bool, dropouts: int = 0
) -> dict[str, Any]:
    """Every hospital sampled each round; all but ``dropouts`` must train."""
    return {
        **base,
        "secure-aggregation": secagg,
        "min-train-nodes": hospitals - dropouts,
        "min-evaluate-nodes": hospitals,
        "min-available-nodes": hospitals,
    }


def simulate(cpus_per_hospital: float) -> RunFn:
    """The real run: one simulation in a child process; its metrics.json."""

    def run(overrides: dict[str, Any], hospitals: int, run_dir: Path) -> dict[str, Any]:
        return run_simulation_child(overrides, hospitals, cpus_per_hospital, run_dir).metrics()

    return run


def keras_measure(overrides: dict[str, Any], hospitals: int, dropouts: int) -> dict[str, Any]:
    """The real in-process round: one local Keras step per hospital, then both aggregations."""
    from benchmarks._secagg_inprocess import keras_updates, measure, measurement_json

    updates, weights = keras_updates(overrides, hospitals)
    return measurement_json(measure(updates, weights, dropouts))


def one_run(run: RunFn, overrides: dict[str, Any], hospitals: int, run_dir: Path) -> dict[str, Any]:
    """The run's summary; a run that fails is reported as not completed, from whatever
    metrics.json it left."""
    if run_dir.exists():  # a previous attempt: start again from scratch
        shutil.rmtree(run_dir)
    try:
        metrics = run(overrides, hospitals, run_dir)
    except RuntimeError as error:
        log(f"{run_dir.name}: {str(error).splitlines()[0]}")
        metrics_file = run_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text("utf-8")) if metrics_file.is_file() else {}
    summary = run_summary(metrics, int(overrides["num-server-rounds"]))
    return {"run_dir": str(run_dir), "seed": overrides["seed"], **summary}


def dropout_from_measurement(measurement: dict[str, Any]) -> dict[str, Any]:
    """A run summary for the in-process dropout row (aggregation only, no training)."""
    return {
        "seconds_per_round": measurement["seconds"],
        "bytes_per_hospital": measurement["bytes_per_hospital"],
        "dropouts": measurement["dropouts"],
        "completed": measurement["completed"],
        "dropout_stages": [COLLECT_STAGE],
    }


def main(
    argv: Sequence[str] | None = None, run: RunFn | None = None, measure: MeasureFn | None = None
) -> int:
    args = parse_args(argv)
    data = None
    if args.data:
        data = existing_data(args.data)
        if data is None:
            return 2
    run = run or simulate(args.cpus_per_hospital)
    measure = measure or keras_measure
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedclinic-secagg-")).resolve()
    base = base_overrides(args, data)
    rows, runs, aggregation = [], [], []
    for hospitals in args.hospital_counts:
        log(f"{hospitals} hospitals: aggregating one round both ways in this process")
        aggregation.append(measure(base, hospitals, 0))
        for secagg in (False, True):
            name = f"{hospitals}-{'secagg' if secagg else 'plain'}"
            log(f"{name}: simulating {args.rounds} rounds")
            overrides = setting_overrides(base, hospitals, secagg)
            summary = one_run(run, overrides, hospitals, work / name)
            diff = aggregation[-1]["max_abs_diff"] if secagg else None
            rows.append(result_row(hospitals, secagg, summary, diff))
            runs.append({"hospitals": hospitals, "secagg": secagg, "dropouts": 0, **summary})
    ratio_at = ratio_setting(rows)
    dropout_row, mode, stages = None, None, []
    if args.dropout_hospitals:
        hospitals, dropped = args.dropout_hospitals, dropouts_for(args.dropout_hospitals)
        log(f"{hospitals} hospitals, {dropped} dropping at collect: one round in this process")
        measured = measure(base, hospitals, dropped)
        aggregation.append(measured)
        seed = exact_dropout_seed(args.seed, args.rounds, hospitals, dropped)
        simulated = args.dropout_row == "simulation" and seed is not None
        mode = "simulation" if simulated else "in-process"
        if mode == "simulation":
            log(f"{hospitals}-secagg-dropout: seed {seed} drops exactly {dropped} per round")
            overrides = setting_overrides({**base, "seed": seed}, hospitals, True, dropped)
            overrides |= {"dropout-rate": DROPOUT_FRACTION, "straggler-rate": 0.0}
            summary = one_run(run, overrides, hospitals, work / f"{hospitals}-secagg-dropout")
        else:
            summary = dropout_from_measurement(measured)
        stages = summary["dropout_stages"]
        dropout_row = result_row(hospitals, True, summary, measured["max_abs_diff"])
        rows.append(dropout_row)
        runs.append({"hospitals": hospitals, "secagg": True, "dropout_row": mode, **summary})
    payload: dict[str, Any] = {
        "results": rows,
        **ratios(rows if dropout_row is None else rows[:-1], ratio_at),
        "ratio_hospitals": ratio_at,
        "dropout_row": mode,
    }
    lines = goals(payload, aggregation, dropout_row, stages)
    print(
        f"\nSecure aggregation: {args.rounds} rounds, model {args.model}, "
        f"{'synthetic data' if data is None else data.name}, work {work}\n"
    )
    print(report(rows))
    print("\n" + "\n".join(f"- {line}" for line in lines))
    write_json(
        Path(args.out),
        {
            **payload,
            "benchmark": "secagg",
            "goals": lines,
            "aggregation": aggregation,
            "runs": runs,
            "machine": machine(),
            "command": " ".join([PROG, *(sys.argv[1:] if argv is None else argv)]),
            "settings": {**vars(args), "data": data and str(data), "work_dir": str(work)},
        },
    )
    print(f"wrote {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

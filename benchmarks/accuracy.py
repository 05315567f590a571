"""Accuracy: pooled, local-only and federated training against MedMNIST v2's reference.

On one MedMNIST ``.npz`` (default PneumoniaMNIST), split across ``--hospitals`` simulated
hospitals with Dirichlet(``--alpha``) label skew exactly as ``simulations/hospitals.py``
splits it for a simulation, and with the same model, initial weights, optimizer (Adam),
batch size and learning rate everywhere:

(a) pooled: one model trained on the whole training split for rounds × local-epochs epochs;
(b) local-only: each hospital trains alone on its share for the same number of epochs
    (mean and worst hospital, by AUC);
(c) federated: each strategy runs ``--rounds`` rounds of ``--local-epochs`` through Flower's
    Simulation Engine (one child process per strategy); the final ``model.keras`` of each
    run is evaluated here.

Every model is scored on the file's official ``test`` split (never seen in training):
AUC of class 1 (with more classes the macro one-vs-rest AUC) and accuracy of the arg-max,
beside the published MedMNIST v2 result (PneumoniaMNIST, ResNet-18 at 28 px: AUC 0.944,
ACC 0.854).

Example: ``python -m benchmarks.accuracy --rounds 20 --local-epochs 1 --out accuracy.json``
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ChildRun,
    add_federation_args,
    existing_data,
    log,
    machine,
    medmnist_overrides,
    run_simulation_child,
    table,
    write_json,
)

# MedMNIST v2 (Yang et al., Scientific Data 2023), Table of 2D results, 28 px.
REFERENCE = {
    "pneumoniamnist": {"model": "ResNet-18 (28)", "auc": 0.944, "accuracy": 0.854},
}
TARGET_AUC, TARGET_ACCURACY, TARGET_GAP = 0.96, 0.87, 0.01


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_federation_args(parser, rounds=20, out="accuracy.json")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam, every method")
    parser.add_argument("--server-eta", type=float, default=0.01, help="fedadam/fedyogi")
    parser.add_argument("--server-tau", type=float, default=0.001, help="fedadam/fedyogi")
    parser.add_argument("--proximal-mu", type=float, default=0.01, help="fedprox")
    parser.add_argument("--strategies", default="fedavg,fedprox,fedadam")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cpus-per-hospital", type=float, default=1.0, help="Ray CPUs per actor")
    parser.add_argument("--skip-baselines", action="store_true", help="only (c), no (a)/(b)")
    return parser.parse_args(argv)


def run_overrides(args: argparse.Namespace, strategy: str = "fedavg") -> dict[str, Any]:
    """The run config every method shares (strategy only matters for (c))."""
    return {
        **medmnist_overrides(args, strategy),
        "batch-size": args.batch_size,
        "learning-rate": args.learning_rate,
        "server-eta": args.server_eta,
        "server-tau": args.server_tau,
        "proximal-mu": args.proximal_mu,
        "seed": args.seed,
        "min-train-nodes": args.hospitals,
        "min-evaluate-nodes": args.hospitals,
        "min-available-nodes": args.hospitals,
    }


def score(probabilities: Any, labels: Any) -> dict[str, float]:
    from common.metrics import classification_metrics

    metrics = classification_metrics(labels, probabilities)
    return {"auc": metrics["auc"], "accuracy": metrics["accuracy"]}


def baselines(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(a) pooled and (b) local-only, in this process with one ``LocalTrainer``."""
    import keras

    from client.training import LocalTrainer
    from common.config import TrainConfig, parse_app_config
    from common.data.site import load_site
    from common.models import build_model
    from simulations.hospitals import simulated_hospital
    from simulations.runner import run_config_with

    config = parse_app_config(run_config_with(run_overrides(args)))
    spec = config.data.spec()
    pooled = load_site(Path(config.data.data_path), spec, "pooled", 0.2, config.seed)
    keras.utils.set_random_seed(config.seed)  # the ServerApp's initial weights
    initial = build_model(config.model, spec).get_weights()
    trainer = LocalTrainer(build_model(config.model, spec))
    epochs = args.rounds * args.local_epochs
    train_config = TrainConfig.model_validate(
        {
            **config.train.model_dump(),  # the run's other training settings
            "local_epochs": epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "proximal_mu": 0.0,
        }
    )
    started = time.monotonic()
    result = trainer.fit(initial, pooled.train, train_config, seed=config.seed)
    trainer.model.set_weights(result.weights)
    pooled_scores = {
        **score(trainer.predict(pooled.test.images), pooled.test.labels),
        "epochs": epochs,
        "train_examples": len(pooled.train),
        "seconds": time.monotonic() - started,
    }
    log(f"pooled: {pooled_scores}")
    local = []
    for hospital in range(args.hospitals):
        site = simulated_hospital(config.data, config.seed, hospital, args.hospitals)
        result = trainer.fit(initial, site.train, train_config, seed=config.seed + hospital)
        trainer.model.set_weights(result.weights)
        scores = score(trainer.predict(pooled.test.images), pooled.test.labels)
        counts = site.class_counts(site.train)
        local.append({"hospital": site.name, "train_class_counts": counts, **scores})
        log(f"local-only {site.name} {counts}: {scores}")
    return pooled_scores, local


def scored_run(
    overrides: dict[str, Any], hospitals: int, cpus_per_hospital: float, run_dir: Path
) -> tuple[ChildRun, dict[str, float]]:
    """One simulation in a child process; its final ``model.keras`` scored on the test split."""
    import keras

    from common.config import parse_app_config
    from common.data.site import load_site
    from simulations.runner import run_config_with

    config = parse_app_config(run_config_with(overrides))
    run = run_simulation_child(overrides, hospitals, cpus_per_hospital, run_dir)
    data = config.data
    test = load_site(Path(data.data_path), data.spec(), "pooled", 0.2, config.seed).test
    model = keras.models.load_model(run.run_dir / "model.keras")
    probabilities = model.predict(test.images, batch_size=256, verbose=0)
    return run, score(probabilities.astype("float64"), test.labels)


def federated(args: argparse.Namespace, strategy: str, work: Path) -> dict[str, Any]:
    """(c) one strategy through the Simulation Engine; its final model scored here."""
    run, scores = scored_run(
        run_overrides(args, strategy), args.hospitals, args.cpus_per_hospital, work / strategy
    )
    rounds = run.metrics()["rounds"]
    last = rounds[-1]["evaluate"]
    return {
        **scores,
        "rounds": len(rounds),
        "local_epochs": args.local_epochs,
        "federated_evaluate_last_round": {"auc": last.get("auc"), "accuracy": last.get("accuracy")},
        "auc_by_round": [r["evaluate"].get("auc") for r in rounds],
        "wall_seconds": run.wall_seconds,
        "run_dir": str(run.run_dir),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = existing_data(args.data)
    if data is None:
        return 2
    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedclinic-accuracy-")).resolve()
    results: dict[str, dict[str, Any]] = {}
    if not args.skip_baselines:
        pooled, local = baselines(args)
        results["pooled"] = pooled
        aucs = [h["auc"] for h in local]
        worst = min(local, key=lambda h: h["auc"] if not math.isnan(h["auc"]) else -1.0)
        results["local_mean"] = {
            "auc": statistics.fmean(aucs),
            "accuracy": statistics.fmean(h["accuracy"] for h in local),
        }
        results["local_worst"] = {
            "auc": worst["auc"],
            "accuracy": worst["accuracy"],
            "hospital": worst["hospital"],
        }
        results["local_per_hospital"] = {h["hospital"]: h for h in local}
    for strategy in strategies:
        log(f"federated {strategy}: {args.rounds} rounds × {args.local_epochs} local epoch(s)")
        results[strategy] = federated(args, strategy, work)
        log(f"federated {strategy}: {results[strategy]}")

    reference = REFERENCE.get(data.stem)
    rows: list[list[Any]] = []
    if reference:
        rows.append([f"MedMNIST v2 {reference['model']} (published)", reference["auc"],
                     reference["accuracy"], ""])  # fmt: skip
    labels = {
        "pooled": f"(a) pooled, {args.rounds * args.local_epochs} epochs",
        "local_mean": "(b) local-only, mean of hospitals",
        "local_worst": "(b) local-only, worst hospital",
    }
    for key, label in labels.items():
        if key in results:
            rows.append([label, results[key]["auc"], results[key]["accuracy"], ""])
    verdicts = {}
    for strategy in strategies:
        r = results[strategy]
        gap = results["pooled"]["auc"] - r["auc"] if "pooled" in results else math.nan
        met = (
            r["auc"] >= TARGET_AUC
            and r["accuracy"] >= TARGET_ACCURACY
            and (math.isnan(gap) or gap <= TARGET_GAP)
        )
        verdicts[strategy] = met
        r["auc_gap_to_pooled"] = gap
        r["target_met"] = met
        rows.append(
            [
                f"(c) federated {strategy}, {args.rounds} rounds × {args.local_epochs} ep",
                r["auc"],
                r["accuracy"],
                "met" if met else "missed",
            ]
        )
    print(
        f"\nTest split of {data.name}: {args.hospitals} hospitals, Dirichlet alpha {args.alpha}, "
        f"model {args.model}, Adam lr {args.learning_rate}, batch {args.batch_size}\n"
    )
    print(table(["method", "test AUC", "test ACC", "target"], rows))
    print(
        f"\ntarget: federated AUC ≥ {TARGET_AUC}, ACC ≥ {TARGET_ACCURACY}, "
        f"within {TARGET_GAP} AUC of pooled"
    )
    write_json(
        Path(args.out),
        {
            "benchmark": "accuracy",
            "machine": machine(),
            "settings": {**vars(args), "data": str(data)},
            "reference": reference,
            "methods": {k: v for k, v in results.items() if k != "local_per_hospital"},
            "local_per_hospital": results.get("local_per_hospital", {}),
            **{k: v for k, v in results.items() if k != "local_per_hospital"},
        },
    )
    print(f"wrote {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

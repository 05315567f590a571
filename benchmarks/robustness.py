"""Robustness: robust aggregation against simulated attackers, and what it costs without one.

On one MedMNIST ``.npz`` (default PneumoniaMNIST) split across ``--hospitals`` simulated
hospitals with Dirichlet(``--alpha``) label skew, each cell of strategies × attacks ×
attacker fractions runs once per seed through Flower's Simulation Engine (a child process,
as in the accuracy benchmark), and each run's ``model.keras`` (best validation round) is
scored on the file's ``test`` split:

- strategies: fedavg, fedmedian, fedtrimmedavg, krum, multikrum, bulyan, centeredclip and
  ``fedavg+norm`` (FedAvg behind the coordinator's ``max-update-norm`` check, bound
  ``--max-update-norm``), each with the accuracy benchmark's recommended settings; Krum,
  Multi-Krum and Bulyan are told the true number of attackers (``num-malicious-nodes``),
  FedTrimmedAvg cuts at least that many hospitals at each end (``trim-beta``);
- attacks: none, sign-flip, scaling (×10), label-flip, gaussian (σ = 1), alie;
- fractions 0.1, 0.2, 0.3 of the hospitals attack: ``round(fraction · hospitals)``, halves
  up (1, 2, 3 of 10); ``none`` runs once per strategy. Bulyan runs only where Flower's
  n ≥ 4f + 3 holds (with 10 hospitals: f ≤ 1); skipped cells are listed with the reason.

Rows are means over the seeds (``auc_std``: sample std). The verdict: for each attack at 20 %,
the best defence's AUC against clean FedAvg (the goal: within 0.03), and each defence's AUC
with no attack minus clean FedAvg's. ``rejected_honest`` counts honest updates the
coordinator rejected: for ``fedavg+norm`` with no attack it should be 0, otherwise the bound
is too tight (an honest update's norm depends on the model, optimizer, learning rate and
local steps — calibrate ``--max-update-norm`` there first).

Finished runs (``robustness-result.json`` in their directory under ``--work-dir``) are
skipped when the command is run again; unfinished ones start from scratch.

Example: ``python -m benchmarks.robustness --work-dir runs/robustness --out robustness.json``
(``--strategies fedavg,krum --attacks none,sign-flip --fractions 0.2 --seeds 1`` runs a slice).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
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
from benchmarks._robustness_grid import (
    ATTACKS,
    STRATEGIES,
    Cell,
    aggregate,
    base_strategy,
    clean_costs,
    expand,
    rejections,
    verdicts,
)
from common.errors import invalid_value
from common.text import markdown_table as table

RESULT_FILE = "robustness-result.json"
HEADERS = (
    "strategy",
    "attack",
    "fraction",
    "attackers",
    "test AUC",
    "± std",
    "test ACC",
    "rejected (honest / attacker)",
)
# (full run config overrides, run directory) -> {"auc", "accuracy", ...}; tests inject a fake.
RunFn = Callable[[dict[str, Any], Path], dict[str, Any]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.robustness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_federation_args(parser, rounds=20, out="robustness.json")
    parser.add_argument("--strategies", default="all", help="comma-separated, or 'all'")
    parser.add_argument("--attacks", default="all", help="comma-separated, or 'all'")
    parser.add_argument("--fractions", default="0.1,0.2,0.3", help="attacker shares (< 0.5)")
    parser.add_argument("--seeds", default="1,2", help="comma-separated run-config seeds")
    parser.add_argument(
        "--max-update-norm",
        type=float,
        default=6.0,
        help="fedavg+norm: reject updates farther than this (L2) from the global model "
        "(default: 1.5 x the largest honest `update-norm` of a clean 10-round FedAvg run)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any run-config value"
    )
    parser.add_argument("--cpus-per-hospital", type=float, default=1.0, help="Ray CPUs per actor")
    return parser.parse_args(argv)


def names(text: str, known: Sequence[str], flag: str) -> list[str]:
    chosen = list(known) if text.strip() == "all" else [n.strip() for n in text.split(",")]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise SystemExit(
            invalid_value(flag, f"'all' or names from {', '.join(known)}", ",".join(unknown))
        )
    return chosen


def numbers(text: str, flag: str, parse: Callable[[str], Any]) -> list[Any]:
    try:
        return [parse(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(invalid_value(flag, "comma-separated numbers", text)) from None


def fractions(text: str) -> list[float]:
    values = numbers(text, "--fractions", float)
    if not values or any(not 0.0 < value < 0.5 for value in values):
        raise SystemExit(invalid_value("--fractions", "numbers > 0 and < 0.5", text))
    return values


def run_overrides(args: argparse.Namespace, data: Path, cell: Cell, seed: int) -> dict[str, Any]:
    """One run's config: the recipe, the strategy's recommended settings, ``--set``, then the
    cell's keys (strategy, attack, attackers' count) and the seed."""
    from benchmarks.accuracy import STRATEGY_SETTINGS, parse_sets

    strategy = base_strategy(cell.strategy)
    return {
        **medmnist_overrides(args, strategy),
        "data-path": str(data),
        # every honest update is needed; an attacker's may be rejected (`max-update-norm`)
        "min-train-nodes": args.hospitals - cell.attackers,
        "min-evaluate-nodes": args.hospitals,
        "min-available-nodes": args.hospitals,
        **STRATEGY_SETTINGS.get(strategy, {}),
        **parse_sets(args.set),
        **cell.overrides,
        "seed": seed,
    }


def scored(cpus_per_hospital: float, hospitals: int) -> RunFn:
    """The real run: a simulation in a child process, its model scored on the test split."""

    def run(overrides: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        from benchmarks.accuracy import scored_run

        child, scores = scored_run(overrides, hospitals, cpus_per_hospital, run_dir)
        metrics = child.metrics()
        best = metrics["outcome"].get("best-round") or {}
        return {
            **scores,
            "val_auc": best.get("validation-auc"),
            "best_round": best.get("round"),
            "attackers": metrics["outcome"].get("attackers", []),
            **rejections(metrics),
            "wall_seconds": child.wall_seconds,
        }

    return run


def cell_dir(work: Path, cell: Cell, seed: int) -> Path:
    return work / cell.strategy / f"{cell.attack}-{cell.fraction:g}" / f"seed-{seed}"


def run_seed(run: RunFn, overrides: dict[str, Any], run_dir: Path, seed: int) -> dict[str, Any]:
    """One run's result, read back if ``run_dir`` already holds it (resuming)."""
    done = run_dir / RESULT_FILE
    if done.is_file():
        result: dict[str, Any] = json.loads(done.read_text("utf-8"))
        return result
    if run_dir.exists():  # an unfinished attempt: start again from scratch
        shutil.rmtree(run_dir)
    result = {**run(overrides, run_dir), "seed": seed, "run_dir": str(run_dir)}
    write_json(done, result)
    return result


def report(rows: list[dict[str, Any]]) -> str:
    return table(
        HEADERS,
        [
            [
                r["strategy"],
                r["attack"],
                f"{r['fraction']:g}",
                r["attackers"],
                r["auc"],
                r["auc_std"],
                r["accuracy"],
                f"{r['rejected_honest']:g} / {r['rejected_attackers']:g}",
            ]
            for r in rows
        ],
    )


def main(argv: Sequence[str] | None = None, run: RunFn | None = None) -> int:
    args = parse_args(argv)
    data = existing_data(args.data)
    if data is None:
        return 2
    seeds = numbers(args.seeds, "--seeds", int)
    from benchmarks.accuracy import STRATEGY_SETTINGS

    trim_beta = float(STRATEGY_SETTINGS.get("fedtrimmedavg", {}).get("trim-beta", 0.2))
    cells, skipped = expand(
        names(args.strategies, STRATEGIES, "--strategies"),
        names(args.attacks, ATTACKS, "--attacks"),
        fractions(args.fractions),
        args.hospitals,
        args.max_update_norm,
        trim_beta,
    )
    for skip in skipped:
        log(f"skip {skip.strategy} × {skip.attack} at {skip.fraction:g}: {skip.reason}")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedclinic-robustness-")).resolve()
    run = run or scored(args.cpus_per_hospital, args.hospitals)
    rows = []
    for index, cell in enumerate(cells, start=1):
        per_seed = []
        for seed in seeds:
            label = f"{cell.strategy} × {cell.attack} {cell.fraction:g} seed {seed}"
            log(f"[{index}/{len(cells)}] {label}")
            overrides = run_overrides(args, data, cell, seed)
            per_seed.append(run_seed(run, overrides, cell_dir(work, cell, seed), seed))
        rows.append(aggregate(cell, per_seed))
    lines = verdicts(rows)
    print(
        f"\nTest split of {data.name}: {args.hospitals} hospitals, Dirichlet alpha {args.alpha}, "
        f"model {args.model}, {args.rounds} rounds × {args.local_epochs} local epoch(s), "
        f"seeds {', '.join(map(str, seeds))}\n"
    )
    print(report(rows))
    print("\n" + "\n".join(f"- {line}" for line in lines))
    write_json(
        Path(args.out),
        {
            "results": rows,
            "skipped": [asdict(skip) for skip in skipped],
            "verdicts": lines,
            "clean_cost": clean_costs(rows),
            "machine": machine(),
            "settings": {**vars(args), "data": str(data), "seeds": seeds},
        },
    )
    print(f"wrote {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

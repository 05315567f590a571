"""Privacy audit: membership inference against federations without and with record-level DP.

For each ``--epsilons`` value (``none`` = no DP, else ``dp = "record"`` calibrated to that ε)
one federation of ``--hospitals`` simulated hospitals (Dirichlet(``--alpha``) label skew,
FedAvg) trains on a stratified random half of the file's ``train`` split, so the other half
(plus ``val`` and ``test``) are images no hospital saw. ``fedclinic audit membership`` then
attacks it (:func:`simulations.audit.membership.audit_membership`): the loss and offline
LiRA attacks (``--shadow-models`` shadow federations with the run's own recipe) against the
global model, and the loss-change attack against one hospital's update. Each row: attack
AUC, TPR at 0.1 % and 1 % FPR (with bootstrap intervals), and the attacked model's test AUC.

Finished settings (``audit-membership.json`` in their run directory under ``--work-dir``)
are read back when the command is run again; an unfinished one starts from scratch.

Example: ``python -m benchmarks.privacy_audit --work-dir runs/privacy --out privacy_audit.json``
(``--epsilons none --shadow-models 8 --rounds 5`` runs a slice).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
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
    run_simulation_child,
    write_json,
)
from common.errors import invalid_value
from common.text import markdown_table as table

AUDIT_FILE = "audit-membership.json"
HEADERS = ("ε", "target", "attack", "AUC", "TPR @ 0.1 % FPR", "TPR @ 1 % FPR", "model test AUC")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.privacy_audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_federation_args(parser, rounds=10, out="privacy_audit.json")
    parser.add_argument("--epsilons", default="none,8,3,1", help="'none' and/or target ε values")
    parser.add_argument("--shadow-models", type=int, default=8, help="LiRA shadow federations")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=1, help="run seed (and the member half's)")
    parser.add_argument("--cpus-per-hospital", type=float, default=1.0, help="Ray CPUs per actor")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    # The DP benchmark's recipe (benchmarks/privacy.py says why: `cnn` does not learn under
    # DP-SGD here), for every row so that no-DP and DP models are compared like for like.
    parser.set_defaults(model="cnn-small", local_epochs=3)
    return parser.parse_args(argv)


def epsilons(text: str) -> list[float | None]:
    """``"none,8,3"`` → ``[None, 8.0, 3.0]``."""
    values: list[float | None] = []
    for part in (p.strip() for p in text.split(",")):
        if part == "none":
            values.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0.0:
            raise SystemExit(invalid_value("--epsilons", "'none' or numbers > 0", text))
        values.append(value)
    if not values:
        raise SystemExit(invalid_value("--epsilons", "'none' or numbers > 0", text))
    return values


def label(epsilon: float | None) -> str:
    return "no-dp" if epsilon is None else f"eps-{epsilon:g}"


def member_half(source: Path, work: Path, seed: int) -> Path:
    """The targets' data: ``source`` with its train split cut to a stratified half."""
    import numpy as np

    from benchmarks._baselines import write_train_subset

    target = work / f"member-half-seed{seed}.npz"
    if not target.is_file():
        with np.load(source) as data:
            size = len(data["train_labels"]) // 2
        write_train_subset(source, size, seed, target)
    return target


def target_overrides(args: argparse.Namespace, data: Path, epsilon: float | None) -> dict[str, Any]:
    privacy = {"dp": "off"} if epsilon is None else {"dp": "record", "dp-epsilon": epsilon}
    return {
        **medmnist_overrides(args, "fedavg"),
        "data-path": str(data),
        "min-train-nodes": args.hospitals,
        "min-evaluate-nodes": args.hospitals,
        "min-available-nodes": args.hospitals,
        "seed": args.seed,
        "learning-rate": args.learning_rate,
        **privacy,
    }


def audited(
    args: argparse.Namespace, full: Path, half: Path, epsilon: float | None, work: Path
) -> dict[str, Any]:
    """One setting's audit JSON: trains the target and audits it unless already done."""
    from simulations.audit.membership import audit_membership
    from simulations.audit.output import write_outputs

    run_dir = work / label(epsilon)
    done = run_dir / AUDIT_FILE
    if done.is_file():
        document: dict[str, Any] = json.loads(done.read_text("utf-8"))
        return document
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log(f"{label(epsilon)}: training the target federation")
    overrides = target_overrides(args, half, epsilon)
    child = run_simulation_child(overrides, args.hospitals, args.cpus_per_hospital, run_dir)
    log(f"{label(epsilon)}: trained in {child.wall_seconds:.0f} s; auditing")
    result = audit_membership(
        run_dir,
        full,
        shadow_models=args.shadow_models,
        hospitals=args.hospitals,
        bootstrap=args.bootstrap,
        seed=args.seed,
        say=lambda line: log(f"{label(epsilon)}: {line}"),
    )
    write_outputs(result, done)
    document = result.to_json()
    return {**document, "train_seconds": child.wall_seconds}


def benchmark_rows(document: dict[str, Any], epsilon: float | None) -> list[dict[str, Any]]:
    """The issue's row fields from one audit: the overall global-model rows and the update row.

    ``epsilon`` is the setting's target ε; ``epsilon_reached`` is the largest ε a hospital
    reported (what bounds the attack).
    """
    rows = []
    for row in document["results"]:
        if row["target"] == "global" and row["hospital"] != "all":
            continue
        rows.append(
            {
                "epsilon": epsilon,
                "target": row["target"],
                "attack": row["attack"],
                "auc": row["auc"],
                "tpr_at_0.1%": row["tpr_at_0.1%"],
                "tpr_at_1%": row["tpr_at_1%"],
                "model_auc": row["model_auc"],
                "hospital": row["hospital"],
                "epsilon_reached": row["epsilon"],
                "auc_ci": row["auc_ci"],
                "tpr_at_0.1%_ci": row["tpr_at_0.1%_ci"],
                "tpr_at_1%_ci": row["tpr_at_1%_ci"],
                "members": row["members"],
                "non_members": row["non_members"],
                "bound_violations": row["bound_violations"],
            }
        )
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    def interval(value: float, ci: list[float]) -> str:
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    return table(
        HEADERS,
        [
            [
                "none" if r["epsilon"] is None else f"{r['epsilon']:g}",
                r["target"] if r["target"] == "global" else f"update ({r['hospital']})",
                r["attack"],
                interval(r["auc"], r["auc_ci"]),
                interval(r["tpr_at_0.1%"], r["tpr_at_0.1%_ci"]),
                interval(r["tpr_at_1%"], r["tpr_at_1%_ci"]),
                "—" if r["model_auc"] is None else f"{r['model_auc']:.3f}",
            ]
            for r in rows
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = epsilons(args.epsilons)
    data = existing_data(args.data)
    if data is None:
        print(f"PneumoniaMNIST not found at {args.data}; pass --data FILE", file=sys.stderr)
        return 2
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="audit-"))
    work.mkdir(parents=True, exist_ok=True)
    half = member_half(data, work, args.seed)
    rows: list[dict[str, Any]] = []
    verdicts: dict[str, str] = {}
    for epsilon in settings:
        document = audited(args, data, half, epsilon, work)
        verdicts[label(epsilon)] = document["verdict"]
        rows.extend(benchmark_rows(document, epsilon))
    print(report(rows))
    for name, verdict in verdicts.items():
        print(f"{name}: DP bound check {verdict}")
    payload = {
        "benchmark": "privacy_audit",
        "machine": machine(),
        "data": str(data),
        "hospitals": args.hospitals,
        "alpha": args.alpha,
        "rounds": args.rounds,
        "shadow_models": args.shadow_models,
        "seed": args.seed,
        "work_dir": str(work),
        "verdicts": verdicts,
        "results": rows,
    }
    write_json(Path(args.out), payload)
    log(f"wrote {args.out}")
    return 1 if "fail" in verdicts.values() else 0


if __name__ == "__main__":
    sys.exit(main())

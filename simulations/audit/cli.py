"""``fedclinic audit membership RUN_DIR --data FILE``: what an attacker learns from a run.

Members are the training images of the run's hospitals that trained, non-members the
other images of FILE's --non-member-splits (default train,val: a test split may come from
another population, which an attack would score as membership). Attacks on the global
model: loss threshold and, with --shadow-models K (0, or an even K ≥ 8), offline LiRA on
K shadow federations trained with the run's own config on random halves; on one
hospital's update (--update-hospital): the drop in each image's loss. Prints attack AUC
and TPR at 0.1 % and 1 % FPR with bootstrap 95 % intervals, overall and per hospital;
writes them as JSON (--out, default RUN_DIR/audit-membership.json) and a log-log ROC plot
(RUN_DIR/plots/audit-roc.png). For a DP run, exit code 1 when a TPR's lower limit exceeds
the bound e^ε·FPR + δ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.boundary import EXIT_FAILED, EXIT_USAGE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="privacy audits of a finished run: `audit membership`",
        description="Privacy audits of a finished run.",
    )
    commands = parser.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND", required=True)
    membership = commands.add_parser(
        "membership",
        help="membership inference against the global model and one hospital's update",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    membership.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a finished run")
    membership.add_argument(
        "--data", type=Path, required=True, help="the .npz or image folder the run trained on"
    )
    membership.add_argument("--out", type=Path, help="JSON file (RUN_DIR/audit-membership.json)")
    membership.add_argument(
        "--shadow-models", type=int, default=8, help="LiRA shadow federations: 0 or even ≥ 8"
    )
    membership.add_argument(
        "--hospitals", type=int, help="hospitals of the run (default: from metrics.json)"
    )
    membership.add_argument(
        "--non-member-splits",
        default="train,val",
        help="splits of FILE whose unseen images are the non-members (default: train,val)",
    )
    membership.add_argument(
        "--update-hospital", help="whose update to attack (default: most training images)"
    )
    membership.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    membership.add_argument("--seed", type=int, default=0, help="shadow halves and bootstrap")
    membership.set_defaults(handler=run_membership)


def run_membership(args: argparse.Namespace) -> int:
    from common.errors import ConfigError
    from simulations.audit.candidates import checked_splits
    from simulations.audit.membership import audit_membership, option_problem
    from simulations.audit.output import result_table, summary_lines, write_outputs

    splits = tuple(name.strip() for name in args.non_member_splits.split(",") if name.strip())
    problem = option_problem(args.shadow_models, args.bootstrap, args.hospitals, args.seed)
    try:
        checked_splits(splits)
    except ConfigError as error:
        problem = problem or str(error)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    result = audit_membership(
        args.run_dir.resolve(),
        args.data.resolve(),
        shadow_models=args.shadow_models,
        hospitals=args.hospitals,
        non_member_splits=splits,
        update_hospital=args.update_hospital,
        bootstrap=args.bootstrap,
        seed=args.seed,
        say=lambda line: print(line, file=sys.stderr, flush=True),
    )
    json_file, plot = write_outputs(result, args.out.resolve() if args.out else None)
    print(result_table(result))
    for line in summary_lines(result):
        print(line)
    print(f"wrote {json_file} and {plot}")
    violations = result.violations
    if violations:
        more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
        print(f"error: DP bound violated: {violations[0]}{more}", file=sys.stderr)
        return EXIT_FAILED
    return 0

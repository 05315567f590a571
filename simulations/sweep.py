"""``python -m simulations.sweep SWEEP.toml [--out DIR]``: a grid of run settings × seeds.

Every run (one grid cell × one seed, see :mod:`simulations.sweep_file`) is a
``python -m simulations`` child process with its own run directory under DIR; ``--jobs``
of them run at once. Run it again with the same DIR and the runs whose ``metrics.json``
says ``completed`` are skipped; the others start again from scratch. Then DIR gets
``results.csv``, ``results.md`` and ``plots/``. The whole file is checked before any run
starts; a bad file is one line on stderr and exit code 1 (2 for a malformed command line).
Exit code 1 also when any run did not complete (the tables say which).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cli.boundary import EXIT_FAILED, EXIT_USAGE, run_reporting_failures
from common.errors import invalid_value
from simulations.sweep_file import Sweep, check_runs, expand, load_sweep
from simulations.sweep_results import write_results
from simulations.sweep_runs import COMPLETED, RunChild, default_jobs, run_all, simulation_child


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.sweep", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("sweep", type=Path, help="the sweep file (TOML)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default: runs/sweeps/<file stem>)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs at once (default: the cores ÷ hospitals × --cpus-per-hospital, at least 1)",
    )
    parser.add_argument(
        "--cpus-per-hospital", type=float, default=1.0, help="CPUs Ray reserves per ClientApp"
    )
    return parser.parse_args(argv)


def run_sweep(
    sweep: Sweep,
    out: Path,
    run_child: RunChild,
    jobs: int,
    say: Callable[[str], None] = print,
) -> int:
    """Check every run's config, run those not completed, write the results; exit code."""
    from simulations.runner import run_config_with

    runs = expand(sweep)
    check_runs(runs, run_config_with)
    out.mkdir(parents=True, exist_ok=True)
    run_all(runs, out, run_child, jobs, say)
    rows = write_results(out, runs, list(sweep.grid))
    failed = [row for row in rows if row["status"] != COMPLETED]
    done = len(rows) - len(failed)
    say(f"sweep: {done}/{len(rows)} runs completed; results: {out / 'results.md'}")
    return EXIT_FAILED if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        print(f"error: {invalid_value('--jobs', 'an integer ≥ 1', args.jobs)}", file=sys.stderr)
        return EXIT_USAGE
    if args.cpus_per_hospital <= 0:
        message = invalid_value("--cpus-per-hospital", "a number > 0", args.cpus_per_hospital)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE

    def run() -> int:
        sweep = load_sweep(args.sweep)
        out = args.out if args.out is not None else Path("runs") / "sweeps" / args.sweep.stem
        jobs = args.jobs or default_jobs(sweep.hospitals, args.cpus_per_hospital)
        child = simulation_child(sweep.hospitals, args.cpus_per_hospital)
        return run_sweep(sweep, out.resolve(), child, jobs)

    return run_reporting_failures(run)


if __name__ == "__main__":
    sys.exit(main())

"""What a deployed round costs against Flower's transport floor and the compute it does.

    python -m benchmarks.deploy --sites 3 --rounds 5 --out deploy.json

Three federations with the same settings (``deploy local``'s: ``cnn-small``, 1 local
epoch, every site required each round, ``--examples`` synthetic images per site):

(a) ``deployed``: ``fedclinic deploy local --perimeter`` — TLS SuperLink on loopback with
    SuperNode authentication and a database, nginx in front, each hospital a SuperNode in
    ``--isolation process`` served by the long-lived executor (``fedclinic site serve``)
    running the installed, approved ClientApp;
(b) ``floor``: the same deployment whose executors serve a ClientApp that does no work
    (:mod:`benchmarks.noop_app`): Flower's polling, nginx, TLS and task handling only;
(c) ``simulated``: the same run config in Flower's Simulation Engine in a child process
    (:mod:`benchmarks._simulate`, 1 CPU per hospital): the compute a round needs;
and, for comparison (``--skip-plain`` leaves it out, it is not in the ratio):
(a') ``plain``: ``fedclinic deploy local`` without ``--perimeter`` — Flower's default
    SuperNode, one ``flwr-clientapp`` process per message.

Seconds per round are the mean over rounds 2..N of each run's ``metrics.json``
``rounds[i].seconds`` (round 1 includes start-up and tracing). The JSON holds
``deployed_s_per_round``, ``floor_s_per_round``, ``simulated_s_per_round`` and
``ratio`` = deployed / (floor + simulated), plus the per-round lists and the settings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._common import load_average, log, machine, write_json
from common.text import markdown_table as table

TARGET_RATIO = 1.2
CPUS_PER_HOSPITAL = 1.0
NOOP_SERVE = (sys.executable, "-m", "benchmarks.noop_app")
VARIANTS = ("deployed", "floor", "simulated")
REQUIRED_KEYS = ("deployed_s_per_round", "floor_s_per_round", "simulated_s_per_round", "ratio")
ORDER = ("floor", "deployed", "simulated", "plain")  # run order: the floor first
SHOWN = ("deployed", "floor", "simulated", "plain")  # table order
LABELS = {
    "deployed": "(a) deploy local --perimeter: executor, installed ClientApp",
    "floor": "(b) the same deployment, no-op ClientApp (transport floor)",
    "simulated": "(c) Simulation Engine, same settings, 1 CPU per hospital",
    "plain": "(a') deploy local without --perimeter: a flwr-clientapp process per message",
}


@dataclass(frozen=True)
class Measured:
    """One variant: its rounds' seconds, the load average at its start, its wall time."""

    variant: str
    round_seconds: list[float]
    load_average: float
    wall_seconds: float

    @property
    def per_round(self) -> float:
        return steady_state(self.round_seconds)


def steady_state(round_seconds: Sequence[float]) -> float:
    """Mean seconds of rounds 2..N (round 1 pays start-up)."""
    if len(round_seconds) < 2:
        raise ValueError(
            "Invalid value for `round_seconds`. Expected at least 2 rounds. "
            f"Received: {len(round_seconds)}"
        )
    steady = round_seconds[1:]
    return sum(steady) / len(steady)


def ratio(deployed: float, floor: float, simulated: float) -> float:
    """deployed / (floor + simulated): 1.0 = a deployed round costs the transport floor plus
    the compute, nothing more."""
    return deployed / (floor + simulated)


def payload(measured: dict[str, Measured], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON: the four required keys first, then per-round lists, load, settings."""
    per_round = {name: measured[name].per_round for name in VARIANTS}
    return {
        "deployed_s_per_round": per_round["deployed"],
        "floor_s_per_round": per_round["floor"],
        "simulated_s_per_round": per_round["simulated"],
        "ratio": ratio(per_round["deployed"], per_round["floor"], per_round["simulated"]),
        "target_ratio": TARGET_RATIO,
        **({"plain_s_per_round": measured["plain"].per_round} if "plain" in measured else {}),
        "round_seconds": {name: m.round_seconds for name, m in measured.items()},
        "wall_seconds": {name: m.wall_seconds for name, m in measured.items()},
        "load_average": {name: m.load_average for name, m in measured.items()},
        "settings": settings,
        "machine": machine(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def rows(measured: dict[str, Measured]) -> list[list[Any]]:
    return [
        [
            LABELS[name],
            measured[name].per_round,
            measured[name].round_seconds[0],
            measured[name].wall_seconds,
            measured[name].load_average,
        ]
        for name in SHOWN
        if name in measured
    ]


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    from deployment.deploy_local import federation_config

    config = federation_config(args.sites, args.rounds, args.examples, Path("unused"))
    del config["run-dir"]
    return {"sites": args.sites, "cpus_per_hospital": CPUS_PER_HOSPITAL, "run_config": config}


def deploy(
    args: argparse.Namespace, workdir: Path, serve: Sequence[str] | None, perimeter: bool = True
) -> list[float]:
    """One ``deploy local`` (``--perimeter`` unless told otherwise); its rounds' seconds."""
    from rich.console import Console

    from deployment.deploy_cli import DeployOptions, deploy_local

    options = DeployOptions(
        args.sites, args.rounds, args.examples, workdir, args.timeout, perimeter, serve
    )
    with (workdir.parent / f"{workdir.name}.out").open("w", encoding="utf-8") as out:
        deployment = deploy_local(options, Console(file=out, width=200))
    return deployment.result.round_seconds


def simulate(args: argparse.Namespace, run_dir: Path) -> list[float]:
    from benchmarks._common import run_simulation_child
    from deployment.deploy_local import federation_config

    overrides = federation_config(args.sites, args.rounds, args.examples, run_dir)
    child = run_simulation_child(overrides, args.sites, CPUS_PER_HOSPITAL, run_dir)
    return [float(r["seconds"]) for r in child.metrics()["rounds"]]


def measure(variant: str, args: argparse.Namespace, work: Path) -> Measured:
    log(f"{variant}: starting (load average {load_average():.1f})")
    load, started = load_average(), time.monotonic()
    if variant == "simulated":
        seconds = simulate(args, work / "simulated")
    elif variant == "plain":
        seconds = deploy(args, work / variant, None, perimeter=False)
    else:
        seconds = deploy(args, work / variant, NOOP_SERVE if variant == "floor" else None)
    measured = Measured(variant, seconds, load, time.monotonic() - started)
    log(f"{variant}: rounds {', '.join(f'{s:.2f}' for s in seconds)} s")
    return measured


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sites", type=int, default=3, help="hospitals")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run (≥ 2)")
    parser.add_argument("--examples", type=int, default=60, help="mean training images per site")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per deployed run")
    parser.add_argument("--work-dir", default="", help="work directories (default: a temp dir)")
    parser.add_argument("--out", default="deploy.json", help="JSON results file")
    parser.add_argument(
        "--skip-plain", action="store_true", help="leave out (a'): deploy local, no executor"
    )
    args = parser.parse_args(argv)
    if args.sites < 1 or args.rounds < 2 or args.examples < 1:
        parser.error("--sites and --examples must be ≥ 1 and --rounds ≥ 2")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedclinic-bench-deploy-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work directory {work}")
    variants = [v for v in ORDER if not (v == "plain" and args.skip_plain)]
    measured = {variant: measure(variant, args, work) for variant in variants}
    result = payload(measured, settings_of(args))
    headers = ["variant", "s/round (2–N)", "round 1 s", "wall s", "load avg"]
    print(table(headers, rows(measured)))
    verdict = "met" if result["ratio"] <= TARGET_RATIO else "missed"
    print(
        f"ratio deployed / (floor + simulated) = {result['ratio']:.3f} "
        f"(target ≤ {TARGET_RATIO}: {verdict})"
    )
    write_json(Path(args.out), result)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

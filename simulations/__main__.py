"""``python -m simulations``: simulate N hospitals in this process with chosen settings.

Example: ``python -m simulations --hospitals 10 --run-config "strategy='fedprox'"``.
Settings not given keep the values declared in pyproject.toml.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from flwr.common.config import parse_config_args

from common.errors import FedclinicError
from simulations.runner import simulate


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulations", description=__doc__)
    parser.add_argument("--hospitals", type=int, default=5, help="simulated hospitals (nodes)")
    parser.add_argument(
        "--cpus-per-hospital", type=float, default=1.0, help="CPUs Ray reserves per ClientApp"
    )
    parser.add_argument(
        "--run-config",
        action="append",
        default=[],
        help="overrides like flwr run's: \"key=value key2='text'\" (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.hospitals < 1:
        print(
            f"Invalid value for `--hospitals`. Expected an integer ≥ 1. Received: {args.hospitals}",
            file=sys.stderr,
        )
        return 2
    overrides: dict[str, Any] = dict(parse_config_args(args.run_config))
    try:
        simulate(overrides, num_hospitals=args.hospitals, cpus_per_hospital=args.cpus_per_hospital)
    except (FedclinicError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

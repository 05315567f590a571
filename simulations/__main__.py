"""``python -m simulations``: simulate N hospitals in this process with chosen settings.

Example: ``python -m simulations --hospitals 10 --run-config "strategy='fedprox'"``;
``--ray-address HOST:PORT`` runs the hospitals on a running Ray cluster (docs/scaling.md).
Settings not given keep the values declared in pyproject.toml. A failure is one line on
stderr and exit code 1 (2 for a malformed command line).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

from cli.boundary import EXIT_USAGE, run_reporting_failures
from common.errors import ConfigError, invalid_value

# What flwr.common.config.parse_config_args reads as one `key=value` (it skips the rest).
_PAIR = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")
_FORMAT = "space-separated key=value pairs such as \"num-server-rounds=3 strategy='fedprox'\""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulations", description=__doc__)
    parser.add_argument("--hospitals", type=int, default=5, help="simulated hospitals (nodes)")
    parser.add_argument(
        "--cpus-per-hospital", type=float, default=1.0, help="CPUs Ray reserves per ClientApp"
    )
    parser.add_argument(
        "--gpus-per-hospital", type=float, default=0.0, help="GPUs Ray reserves per ClientApp"
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="HOST:PORT of a running Ray cluster to run the hospitals on (docs/scaling.md); "
        "default: $RAY_ADDRESS, else a new Ray on this machine",
    )
    parser.add_argument(
        "--run-config",
        action="append",
        default=[],
        help="overrides like flwr run's: \"key=value key2='text'\" (repeatable)",
    )
    return parser.parse_args(argv)


def run_config_overrides(texts: list[str]) -> dict[str, Any]:
    """Flower's parsing of ``--run-config`` texts; text it would skip is refused instead."""
    import click
    from flwr.common.config import parse_config_args

    for text in texts:
        if not text.endswith(".toml") and _PAIR.sub("", text).strip():
            raise ConfigError(invalid_value("--run-config", _FORMAT, text))
    try:
        return dict(parse_config_args(texts))
    except (ValueError, click.ClickException) as error:
        if len(texts) == 1 and texts[0].endswith(".toml"):
            raise ConfigError(f"Invalid TOML in {texts[0]}: {error}") from error
        raise ConfigError(invalid_value("--run-config", _FORMAT, " ".join(texts))) from error


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.hospitals < 1:
        print(
            f"error: {invalid_value('--hospitals', 'an integer ≥ 1', args.hospitals)}",
            file=sys.stderr,
        )
        return EXIT_USAGE

    def run() -> int:
        from simulations.runner import simulate

        overrides = run_config_overrides(args.run_config)
        simulate(
            overrides,
            num_hospitals=args.hospitals,
            cpus_per_hospital=args.cpus_per_hospital,
            ray_address=args.ray_address,
            gpus_per_hospital=args.gpus_per_hospital,
        )
        return 0

    return run_reporting_failures(run)


if __name__ == "__main__":
    sys.exit(main())

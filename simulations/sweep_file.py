"""A sweep file: which runs a sweep makes, validated completely before any run starts.

```toml
hospitals = 10                  # simulated hospitals in every run
seeds = [1, 2]                  # every grid cell runs once per seed (the run config's `seed`)
[base]                          # run-config values of every run
num-server-rounds = 20
[grid]                          # lists: every combination of their values is one cell
strategy = ["fedavg", "krum"]
```

Every run is one cell × one seed, named ``<key>=<value>,.../seed=<seed>`` (``base/seed=1``
without a grid): the run directory under the sweep's output directory.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError, invalid_value

TOP_LEVEL = ("hospitals", "seeds", "base", "grid")
# Keys a sweep sets itself for every run: a file may not set them.
SWEEP_KEYS = {
    "seed": "the top-level `seeds` list",
    "run-dir": "the sweep (one directory per run under --out)",
    "resume": "the sweep (a run that did not complete starts again from scratch)",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
_MAX_NAME = 150  # characters of one path component before it is shortened with a hash

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file."""

    hospitals: int
    seeds: tuple[int, ...]
    base: dict[str, Any]
    grid: dict[str, list[Scalar]]


@dataclass(frozen=True)
class PlannedRun:
    """One grid cell × one seed."""

    cell: tuple[tuple[str, Scalar], ...]  # the grid's values, in the file's key order
    seed: int
    overrides: dict[str, Any]  # base + cell + seed (the sweep adds `run-dir`)

    @property
    def cell_name(self) -> str:
        return cell_name(self.cell)

    @property
    def name(self) -> str:
        """The run directory relative to the sweep's output directory."""
        return f"{self.cell_name}/seed={self.seed}"


def value_text(value: Scalar) -> str:
    """A grid value as written in names and tables: ``true``, ``0.2``, ``krum``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cell_name(cell: tuple[tuple[str, Scalar], ...]) -> str:
    """``strategy=krum,attack-fraction=0.2``: filesystem-safe, deterministic."""
    if not cell:
        return "base"
    text = _UNSAFE.sub("_", ",".join(f"{key}={value_text(value)}" for key, value in cell))
    if len(text) > _MAX_NAME:
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        text = f"{text[: _MAX_NAME - 11]}-{digest}"
    return text


def load_sweep(path: Path) -> Sweep:
    """Read and validate ``path``; any problem is a one-line :class:`ConfigError`."""
    with path.open("rb") as handle:
        try:
            document = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"Invalid TOML in {path}: {error}") from None
    return parse_sweep(document)


def parse_sweep(document: dict[str, Any]) -> Sweep:
    """Validate a sweep file's contents (the checks that need no run config)."""
    unknown = sorted(set(document) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(
            f"Unknown sweep key `{unknown[0]}`. Expected `hospitals`, `seeds`, `[base]` and "
            "`[grid]` at the top level (run-config values go in `[base]` or `[grid]`)."
        )
    hospitals = document.get("hospitals")
    if isinstance(hospitals, bool) or not isinstance(hospitals, int) or hospitals < 1:
        raise ConfigError(invalid_value("hospitals", "an integer ≥ 1", hospitals))
    seeds = document.get("seeds")
    if (
        not isinstance(seeds, list)
        or not seeds
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
    ):
        raise ConfigError(invalid_value("seeds", "a non-empty list of integers ≥ 0", seeds))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(invalid_value("seeds", "distinct seeds", seeds))
    base = _table(document, "base")
    grid = _table(document, "grid")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ConfigError(invalid_value(f"grid.{key}", "a list of values", values))
        if not values:
            raise ConfigError(invalid_value(f"grid.{key}", "a non-empty list of values", values))
        if any(not isinstance(v, Scalar) for v in values):
            raise ConfigError(
                invalid_value(f"grid.{key}", "a list of strings, numbers or booleans", values)
            )
        if len({(type(v), v) for v in values}) != len(values):
            raise ConfigError(invalid_value(f"grid.{key}", "distinct values", values))
    for table, values in (("base", base), ("grid", grid)):
        for key in values:
            if key in SWEEP_KEYS:
                raise ConfigError(
                    f"`{table}.{key}` cannot be set in a sweep file: it is set by "
                    f"{SWEEP_KEYS[key]}."
                )
    both = [key for key in grid if key in base]
    if both:
        raise ConfigError(
            f"`{both[0]}` is in both `[base]` and `[grid]`. Expected each run-config key in "
            "one of them."
        )
    return Sweep(hospitals=hospitals, seeds=tuple(seeds), base=base, grid=grid)


def _table(document: dict[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(invalid_value(name, f"a table (`[{name}]`)", value))
    if any(isinstance(v, dict) for v in value.values()):
        key = next(k for k, v in value.items() if isinstance(v, dict))
        raise ConfigError(invalid_value(f"{name}.{key}", "a run-config value, not a table", {}))
    return dict(value)


def expand(sweep: Sweep) -> list[PlannedRun]:
    """Every grid combination × every seed, exactly once, cells in the file's order."""
    keys = list(sweep.grid)
    runs = []
    for values in itertools.product(*(sweep.grid[key] for key in keys)):
        cell = tuple(zip(keys, values, strict=True))
        for seed in sweep.seeds:
            overrides = {**sweep.base, **dict(cell), "seed": seed}
            runs.append(PlannedRun(cell=cell, seed=seed, overrides=overrides))
    names = [run.name for run in runs]
    clash = next((name for name in names if names.count(name) > 1), None)
    if clash is not None:
        raise ConfigError(
            f"Two runs would share the directory `{clash}`. Expected grid values that differ "
            "in letters, digits or `._=,+-`."
        )
    return runs


def check_runs(runs: list[PlannedRun], run_config: Any) -> None:
    """Check every run's whole config (``run_config(overrides) -> dict``, e.g.
    :func:`simulations.runner.run_config_with`), as the coordinator will, before any starts.

    An unknown key is reported as ``with_overrides`` does ("Did you mean ..."); a bad value
    or combination names the run it is in.
    """
    from common.config import parse_app_config

    for run in runs:
        resolved = run_config(run.overrides)  # unknown keys: the manifest's own message
        try:
            parse_app_config(resolved)
        except ConfigError as error:
            raise ConfigError(f"Run `{run.name}`: {error}") from None

"""Simulation code the installed package offers through entry points (``pyproject.toml``).

Simulated hospitals' data, their faults and a simulation's attackers live in
``simulations/``; ``client/`` and ``server/`` never import it. They look it up here, by
entry-point group and name, only when a simulation asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from common.errors import ConfigError, invalid_value


def installed_function(group: str, name: str, missing: str) -> Callable[..., Any]:
    """The callable installed as entry point ``name`` in ``group``. None installed: a
    ConfigError saying ``missing``, whose ``{entry}`` names the entry point; not callable:
    an invalid-value ConfigError."""
    found = entry_points(group=group, name=name)
    if not found:
        raise ConfigError(missing.format(entry=f"entry point `{name}` in `{group}`"))
    loaded = next(iter(found)).load()
    if not callable(loaded):
        raise ConfigError(invalid_value(f"{group}:{name}", "a function", loaded))
    return loaded

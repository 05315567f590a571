"""The app manifest: the run settings ``pyproject.toml`` declares, and overrides of them.

``[tool.flwr.app.config]`` holds every run setting with its default; Flower hands the
resolved values to the apps as ``context.run_config``. Tools and tests that start runs
themselves read the same defaults here and apply overrides the way ``flwr run`` does.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

from common.errors import ConfigError

APP_CONFIG_SECTION = "[tool.flwr.app.config]"


def declared_defaults(pyproject: Path) -> dict[str, Any]:
    """The run config a ``flwr run`` without overrides would get: for tests and tools.

    A manifest that is not TOML or lacks the app's config section is a :class:`ConfigError`;
    an unreadable one an ``OSError``.
    """
    with pyproject.open("rb") as handle:
        try:
            document = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"Invalid TOML in {pyproject}: {error}") from None
    section: Any = document
    for key in ("tool", "flwr", "app", "config"):
        section = section.get(key) if isinstance(section, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(
            f"Missing section {APP_CONFIG_SECTION} in {pyproject}. Expected the app manifest "
            "(fedclinic's pyproject.toml) that declares every run setting."
        )
    return dict(section)


def with_overrides(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` with ``overrides`` applied; a key not in ``defaults`` is a ConfigError."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(defaults), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ConfigError(
            f"Unknown config key `{unknown[0]}`. Expected one of the keys declared in "
            f"{APP_CONFIG_SECTION} of pyproject.toml.{hint}"
        )
    return {**defaults, **overrides}


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent

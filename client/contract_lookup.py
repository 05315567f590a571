"""Where ``fedclinic site check`` finds the federation's data contract (the app manifest).

In this order, the first that exists:

1. ``--manifest PATH`` (then nothing else: a missing file is an error naming the path);
2. the federation's app a SuperNode installed, ``$FLWR_HOME/apps/<publisher>.fedclinic.
   <version>.<hash>/pyproject.toml`` (``$FLWR_HOME`` defaults to ``~/.flwr``, as in Flower);
   the most recently installed one when there are several: it carries the contract the
   coordinator ships;
3. the manifest installed with the package, ``common/app_manifest.toml`` (the wheel carries
   ``pyproject.toml`` under that name, see ``[tool.hatch.build.targets.wheel.force-include]``);
4. the source checkout's ``pyproject.toml`` (an editable install or a clone).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError, invalid_value

PACKAGED_MANIFEST = "app_manifest.toml"
APP_PROJECT_NAME = "fedclinic"


@dataclass(frozen=True)
class Contract:
    """The manifest found, and where it came from (printed by ``site check``)."""

    path: Path
    origin: str


def find_manifest(
    explicit: Path | None,
    flwr_home: Path | None = None,
    package_dir: Path | None = None,
    checkout_dir: Path | None = None,
) -> Contract:
    """The app manifest to read the contract from; a one-line ConfigError if there is none.

    ``flwr_home``, ``package_dir`` (the installed ``common`` package) and ``checkout_dir``
    default to this machine's; tests pass their own.
    """
    if explicit is not None:
        path = explicit.expanduser().absolute()
        if not path.is_file():
            raise ConfigError(invalid_value("--manifest", "the app's pyproject.toml", str(path)))
        return Contract(path, "--manifest")
    home = flwr_home or _flwr_home()
    package = package_dir or Path(__file__).resolve().parent.parent / "common"
    checkout = checkout_dir or package.parent
    installed = _installed_apps(home / "apps")
    if installed:
        return Contract(installed[0], "the federation's app, installed by a SuperNode")
    candidates = [
        (package / PACKAGED_MANIFEST, "installed with fedclinic"),
        (checkout / "pyproject.toml", "the source checkout"),
    ]
    for path, origin in candidates:
        if path.is_file():
            return Contract(path, origin)
    tried = [f"{home / 'apps'}/*.{APP_PROJECT_NAME}.*/pyproject.toml"]
    tried += [str(path) for path, _ in candidates]
    raise ConfigError(
        f"No app manifest found; looked in {', '.join(tried)}. "
        "Pass --manifest PATH (the federation's pyproject.toml)."
    )


def _installed_apps(apps: Path) -> list[Path]:
    """Manifests of installed fedclinic apps, the most recently installed first."""
    if not apps.is_dir():
        return []
    found = [
        d / "pyproject.toml"
        for d in apps.iterdir()
        if d.is_dir()
        and _project_of(d.name) == APP_PROJECT_NAME
        and (d / "pyproject.toml").is_file()
    ]
    return sorted(found, key=lambda p: (p.parent.stat().st_mtime, p.parent.name), reverse=True)


def _project_of(app_dir_name: str) -> str:
    """``publisher.project.version.hash`` (Flower's install folder name) → ``project``."""
    parts = app_dir_name.split(".")
    return parts[1] if len(parts) >= 4 else ""


def _flwr_home() -> Path:
    """Flower's home: ``$FLWR_HOME``, else ``~/.flwr`` (``flwr.supercore.utils``)."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr").expanduser()

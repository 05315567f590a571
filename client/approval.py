"""What a hospital accepts to run beside its data: the approvals file and the decision.

A Flower App Bundle (FAB) is identified by the SHA-256 of its bytes: the SuperLink, the
SuperNode and the hospital's executor each recompute it, while its name and version are
whatever the submitter's ``pyproject.toml`` says. A hospital therefore pins hashes:
``fedclinic site approve`` records ``fab-id`` (``publisher/name``), ``version`` and
``fab-hash``; the executor (:mod:`client.executor`) runs a task only when
:func:`decide` says so, and then runs the hospital's own *installed* ClientApp — the
bundle is only data used to decide.

The file (JSON, written atomically)::

    {"approvals": [{"fab-id": "fedclinic/fedclinic", "version": "0.1.0",
                    "fab-hash": "<64 hex>", "approved-at": "2026-...Z"}]}
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import FedclinicError, invalid_value
from common.files import write_json_atomic

HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
NOT_APPROVED = "app not approved at this site"
VERSION_DIFFERS = "approved app version differs from the installed fedclinic"
IDENTITY_DIFFERS = "app name or version differs from the approved bundle"
HASH_MISMATCH = "app bundle does not match its hash"


class ApprovalError(FedclinicError):
    """The approvals file is unreadable or malformed, or an approval is invalid."""


@dataclass(frozen=True)
class Approval:
    fab_id: str
    version: str
    fab_hash: str
    approved_at: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "fab-id": self.fab_id,
            "version": self.version,
            "fab-hash": self.fab_hash,
            "approved-at": self.approved_at,
        }


@dataclass(frozen=True)
class Decision:
    """``run`` the task, or refuse it with a short ``kind`` (sent to the coordinator)."""

    run: bool
    kind: str = ""


def checked_hash(value: str) -> str:
    text = value.strip().lower()
    if not HASH_PATTERN.fullmatch(text):
        raise ApprovalError(invalid_value("fab-hash", "64 hexadecimal characters", value))
    return text


def make_approval(fab_id: str, version: str, fab_hash: str) -> Approval:
    if fab_id.count("/") != 1 or not all(fab_id.split("/")):
        raise ApprovalError(invalid_value("fab-id", "`publisher/name`", fab_id))
    if not version.strip():
        raise ApprovalError(invalid_value("version", "a non-empty version", version))
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Approval(fab_id, version.strip(), checked_hash(fab_hash), stamp)


def load_approvals(path: Path) -> list[Approval]:
    """The approvals in ``path``; :class:`ApprovalError` (one line) when it is malformed."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ApprovalError(f"Invalid approvals file {path}: not JSON ({error})") from error
    entries = payload.get("approvals") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise ApprovalError(
            f"Invalid approvals file {path}: expected an object with a list `approvals`."
        )
    return [_parse_entry(path, index, entry) for index, entry in enumerate(entries)]


def load_approvals_or_empty(path: Path) -> list[Approval]:
    return load_approvals(path) if path.exists() else []


def save_approvals(path: Path, approvals: list[Approval]) -> None:
    write_json_atomic(path, {"approvals": [a.to_json() for a in approvals]})


def with_approval(approvals: list[Approval], new: Approval) -> list[Approval]:
    """``approvals`` with ``new`` added (an approval of the same hash is replaced)."""
    return [a for a in approvals if a.fab_hash != new.fab_hash] + [new]


def without_hash(approvals: list[Approval], fab_hash: str) -> list[Approval]:
    wanted = checked_hash(fab_hash)
    kept = [a for a in approvals if a.fab_hash != wanted]
    if len(kept) == len(approvals):
        raise ApprovalError(f"No approval with fab-hash {wanted} to revoke.")
    return kept


def decide(
    approvals: list[Approval],
    fab_id: str,
    fab_version: str,
    fab_hash: str,
    content: bytes,
    installed_version: str,
) -> Decision:
    """Run a task of the app ``fab_id``/``fab_version``/``fab_hash`` (bundle ``content``)?"""
    if hashlib.sha256(content).hexdigest() != fab_hash:
        return Decision(False, HASH_MISMATCH)
    approval = next((a for a in approvals if a.fab_hash == fab_hash), None)
    if approval is None:
        return Decision(False, NOT_APPROVED)
    if (approval.fab_id, approval.version) != (fab_id, fab_version):
        return Decision(False, IDENTITY_DIFFERS)
    if approval.version != installed_version:
        return Decision(False, VERSION_DIFFERS)
    return Decision(True)


def app_dir_bundle(app_dir: Path) -> bytes:
    """The FAB ``flwr run APP_DIR`` would ship (Flower builds it deterministically)."""
    from flwr.cli.build import build_fab_from_disk

    if not (app_dir / "pyproject.toml").is_file():
        raise ApprovalError(invalid_value("--app-dir", "a folder with a pyproject.toml", app_dir))
    try:
        return build_fab_from_disk(app_dir)
    except ValueError as error:
        raise ApprovalError(f"Could not bundle {app_dir}: {error}") from error


def bundle_approval(content: bytes) -> Approval:
    """The approval of a FAB's bytes: its id and version from its own manifest."""
    from flwr.cli.config_utils import get_fab_metadata

    try:
        fab_id, version = get_fab_metadata(content)
    except (ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ApprovalError(f"Not a Flower App Bundle: {error}") from error
    return make_approval(fab_id, version, hashlib.sha256(content).hexdigest())


def _parse_entry(path: Path, index: int, entry: Any) -> Approval:
    keys = ("fab-id", "version", "fab-hash")
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in keys):
        raise ApprovalError(
            f"Invalid approvals file {path}: entry {index} needs string "
            "`fab-id`, `version` and `fab-hash`."
        )
    if not HASH_PATTERN.fullmatch(entry["fab-hash"]):
        raise ApprovalError(
            f"Invalid approvals file {path}: entry {index} `fab-hash` is not 64 lowercase hex "
            f"characters. Received: {entry['fab-hash']!r}"
        )
    return Approval(
        entry["fab-id"], entry["version"], entry["fab-hash"], str(entry.get("approved-at", ""))
    )

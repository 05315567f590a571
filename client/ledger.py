"""A hospital's privacy ledger: every release of a model trained on its data, kept by the hospital.

The ledger is keyed by a fingerprint of the training data (their images and labels), not
by run or DP settings: a coordinator that changes ``dp-delta``, the noise or the run id
still meets the same entry, so it cannot reset what the hospital has spent. ε is computed
from the entry's compositions at whatever δ is asked (RDP composition does not depend on
δ), with Flower's accountant (:mod:`common.privacy`).

Where it lives: in a deployed hospital, a JSON file (``privacy-ledger`` in the node
config, by default ``<data-path>.privacy-ledger.json`` next to the data), written
atomically; a simulated hospital keeps it in ``<run-dir>/privacy-ledgers/<site>.json``
when the run has a ``run-dir`` (so a resumed run continues it), else in the node's
``Context.state`` for the run. An unreadable ledger file is never replaced: the hospital
refuses to train until a person looks at it (fail closed).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flwr.app import ConfigRecord, RecordDict
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

from common.data.schema import Split
from common.errors import FedclinicError
from common.files import write_json_atomic
from common.privacy import quiet_absl, record_accountant, record_event

LEDGER_FORMAT = 1
STATE_KEY = "fedclinic-privacy-ledger"


class LedgerError(FedclinicError):
    """The ledger cannot be read or written: the hospital does not train (fail closed)."""


def data_fingerprint(split: Split) -> str:
    """SHA-256 of the training images and labels (dtype and shape included)."""
    digest = hashlib.sha256()
    for array in (split.images, split.labels):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass
class LedgerEntry:
    """What one dataset has released: DP-SGD compositions and non-private releases."""

    population: int
    compositions: list[dict[str, float | int]] = field(default_factory=list)
    non_private_releases: int = 0

    def epsilon(self, delta: float, extra: tuple[GaussianPrivacyEvent, int] | None = None) -> float:
        """Cumulative ε at ``delta`` (∞ after a non-private release), optionally as if
        ``extra`` = (event, count) were composed too."""
        if self.non_private_releases > 0:
            return math.inf
        events = [
            (
                record_event(float(c["noise_multiplier"]), int(c["sample_size"]), self.population),
                int(c["count"]),
            )
            for c in self.compositions
        ]
        if extra is not None:
            events.append(extra)
        if not events:
            return 0.0
        accountant = record_accountant(self.population, delta)
        with quiet_absl():
            for event, count in events:
                accountant.compose(event, count)
            return accountant.get_epsilon(delta)

    def add(self, event: GaussianPrivacyEvent, count: int) -> None:
        """Compose ``count`` ``event`` s; repeats of one setting share a line (the RDP
        of a line is computed once however many rounds it covers)."""
        for line in self.compositions:
            if (line["noise_multiplier"], line["sample_size"]) == (
                event.noise_multiplier,
                event.sample_size,
            ):
                line["count"] = int(line["count"]) + count
                return
        self.compositions.append(
            {
                "noise_multiplier": event.noise_multiplier,
                "sample_size": event.sample_size,
                "count": count,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "population": self.population,
            "compositions": self.compositions,
            "non_private_releases": self.non_private_releases,
        }


class LedgerStore(Protocol):
    def load(self) -> dict[str, Any]: ...
    def save(self, document: dict[str, Any]) -> None: ...


class FileStore:
    """The ledger as a JSON file, replaced atomically on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return empty_document()
        try:
            return checked_document(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as err:
            raise LedgerError(
                f"Cannot read the privacy ledger {self.path} ({type(err).__name__}: {err}). "
                "The hospital does not train until it is repaired or moved away by a person."
            ) from None

    def save(self, document: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, document)
        except OSError as err:
            raise LedgerError(
                f"Cannot write the privacy ledger {self.path} ({type(err).__name__}: {err})."
            ) from None


class StateStore:
    """The ledger in the node's ``Context.state`` (one run)."""

    def __init__(self, state: RecordDict) -> None:
        self.state = state

    def load(self) -> dict[str, Any]:
        record = self.state.config_records.get(STATE_KEY)
        if record is None:
            return empty_document()
        return checked_document(json.loads(str(record["json"])))

    def save(self, document: dict[str, Any]) -> None:
        self.state[STATE_KEY] = ConfigRecord({"json": json.dumps(document, sort_keys=True)})


def empty_document() -> dict[str, Any]:
    return {"format": LEDGER_FORMAT, "entries": {}}


def checked_document(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict) or document.get("format") != LEDGER_FORMAT:
        raise ValueError(f"not a format-{LEDGER_FORMAT} privacy ledger")
    if not isinstance(document.get("entries"), dict):
        raise ValueError("its `entries` is not an object")
    return document


def entry_of(document: dict[str, Any], fingerprint: str, population: int) -> LedgerEntry:
    raw = document["entries"].get(fingerprint)
    if raw is None:
        return LedgerEntry(population=population)
    try:
        return LedgerEntry(
            population=int(raw["population"]),
            compositions=list(raw["compositions"]),
            non_private_releases=int(raw["non_private_releases"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise LedgerError(
            f"Invalid privacy ledger entry for this data ({type(err).__name__}: {err})."
        ) from None


def with_entry(document: dict[str, Any], fingerprint: str, entry: LedgerEntry) -> dict[str, Any]:
    return {**document, "entries": {**document["entries"], fingerprint: entry.to_json()}}

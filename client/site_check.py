"""Check a hospital's data with the ClientApp's own loader, locally, sending nothing.

``check_site`` runs exactly what a deployed ClientApp runs on ``data-path``
(:func:`common.data.site.load_splits` then :func:`site_from_splits`) and turns the outcome
into a :class:`SiteReport`: images per class and split, image shape, value range, and
every problem found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.data.schema import DataSpec, SiteData, Split
from common.data.site import load_splits, site_from_splits
from common.errors import DataError


@dataclass(frozen=True)
class SplitSummary:
    name: str
    examples: int
    per_class: dict[str, int]
    shape: tuple[int, ...]
    value_range: tuple[float, float]


@dataclass(frozen=True)
class SiteReport:
    path: Path
    site_name: str
    spec: DataSpec
    splits: list[SplitSummary] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_site(
    path: Path,
    spec: DataSpec,
    site_name: str,
    holdout_fraction: float,
    seed: int,
    val_fraction: float = 0.0,
) -> SiteReport:
    """Validate the data at ``path`` as the ClientApp would; never raises :class:`DataError`.
    The summary lists the splits the ClientApp will use, held-out ones included."""
    try:
        splits = load_splits(path, spec, site_name)
    except DataError as error:
        return SiteReport(path, site_name, spec, problems=error.problems)
    summaries = [_summary(name, split, spec) for name, split in splits.items()]
    try:
        site = site_from_splits(site_name, splits, spec, holdout_fraction, seed, val_fraction)
    except DataError as error:
        return SiteReport(path, site_name, spec, summaries, error.problems)
    if "test" not in splits or ("val" not in splits and site.val is not None):
        summaries = _held_out(site, spec, splits)  # the ClientApp holds part of `train` out
    return SiteReport(path, site_name, spec, summaries)


def _held_out(site: SiteData, spec: DataSpec, found: dict[str, Split]) -> list[SplitSummary]:
    def label(name: str) -> str:
        return name if name in found else f"{name} (held out)"

    named = [("train", site.train), (label("test"), site.test)]
    if site.val is not None:
        named.insert(1, (label("val"), site.val))
    return [_summary(name, split, spec) for name, split in named]


def _summary(name: str, split: Split, spec: DataSpec) -> SplitSummary:
    counts = [int((split.labels == i).sum()) for i in range(spec.num_classes)]
    low = float(split.images.min()) if len(split) else 0.0
    high = float(split.images.max()) if len(split) else 0.0
    return SplitSummary(
        name=name,
        examples=len(split),
        per_class=dict(zip(spec.class_names, counts, strict=True)),
        shape=tuple(int(d) for d in split.images.shape[1:]),
        value_range=(low, high),
    )

"""Check a hospital's data with the ClientApp's own loader, locally, sending nothing.

``check_site`` runs exactly what a deployed ClientApp runs on ``data-path``
(:func:`common.data.site.load_splits` then :func:`site_from_splits`) and turns the outcome
into a :class:`SiteReport`: images per class and split, image shape, value range, and
every problem found. On top of the loader it refuses a declared class without a single
image (the ClientApp would train without it), and for image folders and DICOM sites it
notes what the loader converts, resizes or skips (:mod:`common.data.folder_survey`,
:mod:`common.data.dicom_survey`); notes never fail the check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.data.dicom_survey import survey_dicom
from common.data.folder_survey import FolderSurvey, format_notes, ignored_notes, survey_folder
from common.data.schema import DataSpec, SiteData, Split
from common.data.site import data_kind, load_splits, site_from_splits
from common.errors import DataError


@dataclass(frozen=True)
class SplitSummary:
    """One split's images per class; ``shape`` and ``value_range`` None when the loader
    failed and the images were only counted as files."""

    name: str
    examples: int
    per_class: dict[str, int]
    shape: tuple[int, ...] | None = None
    value_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class SiteReport:
    path: Path
    site_name: str
    spec: DataSpec
    splits: list[SplitSummary] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def loaded(self) -> bool:
        """True when the table counts loaded images, False when it counts files only."""
        return all(split.shape is not None for split in self.splits)


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
    kind = data_kind(path)
    survey = survey_folder(path, spec) if kind == "folder" else None
    notes = [*format_notes(survey, spec), *ignored_notes(survey)] if survey else []
    if kind == "dicom":
        notes = survey_dicom(path, spec)
    try:
        splits = load_splits(path, spec, site_name)
    except DataError as error:
        counted = _counted(survey, spec) if survey else []
        missing = _missing_classes(counted, spec, survey, path) if survey else []
        return SiteReport(path, site_name, spec, counted, [*error.problems, *missing], notes)
    summaries = [_summary(name, split, spec) for name, split in splits.items()]
    missing = _missing_classes(summaries, spec, survey, path)
    try:
        site = site_from_splits(site_name, splits, spec, holdout_fraction, seed, val_fraction)
    except DataError as error:
        return SiteReport(path, site_name, spec, summaries, [*error.problems, *missing], notes)
    if "test" not in splits or ("val" not in splits and site.val is not None):
        summaries = _held_out(site, spec, splits)  # the ClientApp holds part of `train` out
    return SiteReport(path, site_name, spec, summaries, missing, notes)


def _missing_classes(
    summaries: list[SplitSummary], spec: DataSpec, survey: FolderSurvey | None, path: Path
) -> list[str]:
    """A declared class with no image in any split: the model would never see it."""
    problems: list[str] = []
    if survey is not None and not survey.splits:
        return problems  # no class or split folder at all: the loader says so
    for name in spec.class_names:
        if any(split.per_class[name] for split in summaries):
            continue
        places = survey.looked_in(name) if survey else [path]
        problems.append(
            f"declared class `{name}` has no images in any split; looked in "
            + ", ".join(f"`{place}`" for place in places)
        )
    return problems


def _counted(survey: FolderSurvey, spec: DataSpec) -> list[SplitSummary]:
    """Image files per split and class, for a folder the loader refused."""
    summaries = []
    for split in survey.splits:
        per_class = {name: survey.count(split, name) for name in spec.class_names}
        summaries.append(SplitSummary(split, sum(per_class.values()), per_class))
    return summaries


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

"""``labels.csv``: which class (and split) each DICOM file of a site belongs to.

The file sits at the top of the site's folder. Its first row is the header
``path,label`` or ``path,label,split``; every other row names one DICOM file by its path
relative to the folder (``/`` separators), its class (one of ``class-names``, exactly)
and, optionally, its split (``train``, ``val`` or ``test``; empty or absent: ``train``).
Blank lines are ignored. Every problem names the file and line.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from common.data.schema import SPLIT_NAMES

LABELS_FILE = "labels.csv"
HEADERS: tuple[tuple[str, ...], ...] = (("path", "label"), ("path", "label", "split"))
DEFAULT_SPLIT = "train"


@dataclass(frozen=True)
class Labels:
    """What ``labels.csv`` says: its valid rows, every path it names (valid row or not, so
    a file named on a bad row is not also reported as unlabelled) and its problems."""

    rows: list[LabelRow]
    mentioned: set[str]
    problems: list[str]


@dataclass(frozen=True)
class LabelRow:
    """One labelled file: its path relative to the site folder, class index, split."""

    path: str
    label: int
    split: str
    line: int


def read_labels(root: Path, class_names: tuple[str, ...]) -> Labels:
    """Every valid row of ``root/labels.csv`` and every problem with the file's rows."""
    source = root / LABELS_FILE
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        return Labels([], set(), [f"`{source}`: unreadable ({type(error).__name__}: {error})"])
    rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines()), start=1) if any(r)]
    if not rows:
        expected = "expected the header `path,label[,split]` and one row per DICOM file"
        return Labels([], set(), [f"`{source}`: empty; {expected}"])
    header_line, header = rows[0]
    columns = tuple(cell.strip().lower() for cell in header)
    if columns not in HEADERS:
        received = ",".join(header)
        expected = "expected the header `path,label` or `path,label,split`"
        return Labels(
            [], set(), [f"`{source}` line {header_line}: {expected}, received `{received}`"]
        )
    labelled: list[LabelRow] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    mentioned: set[str] = set()
    for line, cells in rows[1:]:
        if cells:
            mentioned.add(PurePosixPath(cells[0].strip()).as_posix())
        row, row_problems = _parse_row(source, line, cells, len(columns), class_names)
        problems.extend(row_problems)
        if row is None:
            continue
        if row.path in first_line:
            problems.append(
                f"`{source}` line {line}: `{row.path}` is listed again "
                f"(first on line {first_line[row.path]})"
            )
            continue
        first_line[row.path] = line
        labelled.append(row)
    if not labelled and not problems:
        problems.append(f"`{source}`: no labelled files below the header")
    return Labels(labelled, mentioned, problems)


def _parse_row(
    source: Path, line: int, cells: list[str], width: int, class_names: tuple[str, ...]
) -> tuple[LabelRow | None, list[str]]:
    where = f"`{source}` line {line}"
    if len(cells) != width:
        return None, [f"{where}: expected {width} columns, received {len(cells)}"]
    path, label, split = (cell.strip() for cell in (*cells, DEFAULT_SPLIT)[:3])
    problems = []
    relative = PurePosixPath(path)
    if not path or relative.is_absolute() or ".." in relative.parts or "\\" in path:
        problems.append(
            f"{where}: expected a path relative to the folder, with `/` separators, "
            f"received `{path}`"
        )
    if label not in class_names:
        problems.append(
            f"{where}: unknown class `{label}`{_did_you_mean(label, class_names)}; "
            f"declared classes: {', '.join(class_names)}"
        )
    split = split or DEFAULT_SPLIT
    if split not in SPLIT_NAMES:
        problems.append(
            f"{where}: unknown split `{split}`{_did_you_mean(split, SPLIT_NAMES)}; "
            f"expected one of {', '.join(SPLIT_NAMES)} (empty: train)"
        )
    if problems:
        return None, problems
    return LabelRow(relative.as_posix(), class_names.index(label), split, line), []


def _did_you_mean(value: str, choices: tuple[str, ...]) -> str:
    """`` (did you mean `x`?)`` for the closest choice, case ignored; empty when none is close."""
    by_folded = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(value.lower(), list(by_folded), n=1, cutoff=0.6)
    return f" (did you mean `{by_folded[close[0]]}`?)" if close else ""

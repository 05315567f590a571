"""What an image folder holds, read the way :mod:`common.data.folder` reads it.

:func:`survey_folder` never decodes pixels: it walks the same split and class folders as
:func:`common.data.folder.load_image_folder`, counts the image files of every declared
class, reads each image's header (mode and size) and lists the entries the loader skips.
``fedclinic site check`` reports from it what the loader will convert, resize or ignore,
and still counts a site's images when the loader refuses the site.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from common.data.folder import (
    _HIGH_BIT_DEPTH_MODES,
    IMAGE_SUFFIXES,
    _is_image_file,
    _split_folders,
    _visible_dirs,
)
from common.data.schema import DataSpec

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SHOWN = 3  # names / sizes listed before "+N more"


@dataclass(frozen=True)
class ClassFolder:
    """The image files of one declared class in one split, by header mode and size."""

    split: str
    name: str
    path: Path
    modes: Counter[str] = field(default_factory=Counter)
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)

    @property
    def images(self) -> int:
        return sum(self.modes.values())


@dataclass(frozen=True)
class FolderSurvey:
    """Image files per split and declared class; what the loader will skip, where."""

    splits: dict[str, Path]
    classes: list[ClassFolder]
    ignored: dict[Path, tuple[str, list[str]]]  # folder -> (why skipped, entry names)

    def count(self, split: str, class_name: str) -> int:
        return sum(c.images for c in self.classes if (c.split, c.name) == (split, class_name))

    def looked_in(self, class_name: str) -> list[Path]:
        return [folder / class_name for folder in self.splits.values()]


def survey_folder(root: Path, spec: DataSpec) -> FolderSurvey:
    """Survey ``root`` (an existing folder) with the loader's layout rules."""
    layout, _ = _split_folders(root, spec)
    ignored: dict[Path, tuple[str, list[str]]] = {}
    if layout and layout.get("train") != root:  # split folders: the rest of the root is skipped
        skipped = [p for p in root.iterdir() if not _is_visible_dir(p)]
        _note_ignored(ignored, root, skipped, "only split folders are read here")
    classes: list[ClassFolder] = []
    for split, split_root in sorted(layout.items()):
        skipped = [p for p in split_root.iterdir() if not _is_visible_dir(p)]
        _note_ignored(ignored, split_root, skipped, "only class folders are read here")
        for class_dir in _visible_dirs(split_root):
            if class_dir.name in spec.class_names:
                classes.append(_class_folder(split, class_dir, ignored))
    return FolderSurvey(dict(sorted(layout.items())), classes, ignored)


def format_notes(survey: FolderSurvey, spec: DataSpec) -> list[str]:
    """One line per class folder whose images the loader converts or resizes, saying how."""
    notes: list[str] = []
    target = "L" if spec.channels == 1 else "RGB"
    wanted = "grey (L)" if target == "L" else "RGB"
    side = spec.image_size
    for folder in survey.classes:
        for mode, count in sorted(folder.modes.items()):
            if mode != target:
                notes.append(
                    f"`{folder.path}`: {count} of {folder.images} images are {mode}, "
                    f"not {wanted}: {_conversion(mode, target)}"
                )
        notes.extend(resize_notes(folder.path, folder.sizes, folder.images, side, "images"))
    return notes


def resize_notes(
    where: Path, sizes: Counter[tuple[int, int]], total: int, side: int, noun: str
) -> list[str]:
    """The note for images of ``sizes`` (width, height) other than ``side`` x ``side``:
    how many of ``total``, the commonest sizes, and how the loader resizes them."""
    other = {size: n for size, n in sizes.items() if size != (side, side)}
    if not other:
        return []
    listed = sorted(other.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{w}x{h}: {n}" for (w, h), n in listed[:_SHOWN])
    more = f", +{len(listed) - _SHOWN} more sizes" if len(listed) > _SHOWN else ""
    how = "; the aspect ratio is not kept" if any(w != h for w, h in other) else ""
    return [
        f"`{where}`: {sum(other.values())} of {total} {noun} are not {side}x{side} "
        f"({shown}{more}): resized to {side}x{side} (bilinear{how})"
    ]


def ignored_notes(survey: FolderSurvey) -> list[str]:
    """One line per folder with entries the loader skips: how many, and the first names."""
    notes = []
    for folder, (why, names) in sorted(survey.ignored.items()):
        shown = ", ".join(names[:_SHOWN])
        more = f", +{len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
        entries = "entry" if len(names) == 1 else "entries"
        notes.append(f"`{folder}`: {len(names)} {entries} ignored, {why}: {shown}{more}")
    return notes


def _class_folder(
    split: str, class_dir: Path, ignored: dict[Path, tuple[str, list[str]]]
) -> ClassFolder:
    folder = ClassFolder(split, class_dir.name, class_dir)
    skipped: list[Path] = []
    for entry in sorted(class_dir.iterdir()):
        if not _is_image_file(entry):
            skipped.append(entry)
            continue
        try:
            with Image.open(entry) as image:  # reads the header only
                folder.modes[image.mode] += 1
                folder.sizes[image.size] += 1
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # the loader names the unreadable file
    why = f"not a visible {'/'.join(IMAGE_SUFFIXES)} file"
    _note_ignored(ignored, class_dir, skipped, why)
    return folder


def _note_ignored(
    ignored: dict[Path, tuple[str, list[str]]], folder: Path, entries: list[Path], why: str
) -> None:
    names = sorted(f"{p.name}/" if p.is_dir() else p.name for p in entries)
    if names:
        ignored[folder] = (why, names)


def _is_visible_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def _conversion(mode: str, target: str) -> str:
    """What :func:`common.data.folder._read_image` does to an image of ``mode``."""
    steps = []
    if mode.startswith("I;16"):
        steps.append("scaled from 16 bits (0..65535) to 8-bit grey")
    elif mode in _HIGH_BIT_DEPTH_MODES:
        steps.append("scaled to 8-bit grey (from 0..65535 if any value exceeds 255)")
    if mode in _HIGH_BIT_DEPTH_MODES:
        if target == "RGB":
            steps.append("copied to 3 channels")
    elif target == "L":
        steps.append("converted to grey")
    else:
        steps.append("converted to RGB" + (" (grey copied to 3 channels)" if mode == "L" else ""))
    if mode in _ALPHA_MODES:
        steps.append("transparency dropped")
    return ", ".join(steps)

"""Image folders: ``root/<class>/*.png`` or ``root/{train,val,test}/<class>/*.png``."""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
from PIL import Image

from common.data.schema import SPLIT_NAMES, DataSpec, Split, make_split
from common.errors import DataError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def load_image_folder(root: Path, spec: DataSpec, site_name: str) -> dict[str, Split]:
    """Read every split under ``root``; a root of class folders is the ``train`` split.

    Class index = position of the folder's name in ``spec.class_names``. Files are read
    in sorted order; files without an image suffix and hidden entries are ignored. Every
    problem found is reported in one :class:`DataError` whose source is ``site_name``.
    """
    if not root.is_dir():
        raise DataError(site_name, [f"`{root}`: folder not found"])
    layout, problems = _split_folders(root, spec)
    raw: dict[str, tuple[list[np.ndarray], list[int]]] = {}
    for split_name, split_root in layout.items():
        images, labels, split_problems = _read_split(split_root, spec)
        problems.extend(split_problems)
        raw[split_name] = (images, labels)
    if problems:
        raise DataError(site_name, problems)
    return {
        name: make_split(
            np.stack(images), np.asarray(labels, dtype=np.int64), spec, str(layout[name])
        )
        for name, (images, labels) in raw.items()
    }


def write_image_folder(root: Path, splits: dict[str, Split], class_names: tuple[str, ...]) -> None:
    """Write ``root/<split>/<class>/<i>.png``: the inverse of :func:`load_image_folder`.

    ``i`` is the image's index in its split, zero-padded so that sorted file names keep
    the split's order within each class.
    """
    for split_name, split in splits.items():
        where = f"{root / split_name}"
        channels = split.images.shape[-1] if split.images.ndim == 4 else 0
        if channels not in (1, 3):
            raise DataError(
                where, [f"images: expected shape (N, H, W, 1 or 3), received {split.images.shape}"]
            )
        if len(split) and (split.labels.min() < 0 or split.labels.max() >= len(class_names)):
            raise DataError(
                where,
                [
                    f"labels: expected values in 0..{len(class_names) - 1}, "
                    f"received {split.labels.min()}..{split.labels.max()}"
                ],
            )
        for class_name in class_names:
            (root / split_name / class_name).mkdir(parents=True, exist_ok=True)
        width = len(str(max(len(split) - 1, 0)))
        pixels = np.clip(np.rint(split.images * 255.0), 0, 255).astype(np.uint8)
        if channels == 1:
            pixels = pixels[..., 0]
        for i, (image, label) in enumerate(zip(pixels, split.labels, strict=True)):
            path = root / split_name / class_names[int(label)] / f"{i:0{width}d}.png"
            Image.fromarray(image).save(path)


def _split_folders(root: Path, spec: DataSpec) -> tuple[dict[str, Path], list[str]]:
    """Map split name -> folder of class folders, and the problems with the layout."""
    folders = _visible_dirs(root)
    split_dirs = [d for d in folders if d.name in SPLIT_NAMES and d.name not in spec.class_names]
    if not split_dirs:
        if not folders:
            return {}, [
                f"`{root}`: expected class folders ({', '.join(spec.class_names)}) "
                f"or split folders ({', '.join(SPLIT_NAMES)}), found none"
            ]
        return {"train": root}, []
    problems = [
        f"`{d}`: unexpected folder beside split folders; expected only {', '.join(SPLIT_NAMES)}"
        for d in folders
        if d not in split_dirs
    ]
    if not any(d.name == "train" for d in split_dirs):
        problems.append(f"`{root}`: missing `train` folder")
    return {d.name: d for d in split_dirs}, problems


def _read_split(split_root: Path, spec: DataSpec) -> tuple[list[np.ndarray], list[int], list[str]]:
    images: list[np.ndarray] = []
    labels: list[int] = []
    problems: list[str] = []
    for class_dir in _visible_dirs(split_root):
        if class_dir.name not in spec.class_names:
            problems.append(
                f"`{class_dir}`: unknown class folder `{class_dir.name}`; "
                f"declared classes: {', '.join(spec.class_names)}"
                f"{class_folder_hint(class_dir.name, spec.class_names)}"
            )
            continue
        label = spec.class_names.index(class_dir.name)
        for file in sorted(p for p in class_dir.iterdir() if _is_image_file(p)):
            try:
                images.append(_read_image(file, spec))
                labels.append(label)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                problems.append(f"`{file}`: unreadable image ({type(error).__name__}: {error})")
    if not images and not problems:
        problems.append(f"`{split_root}`: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images, labels, problems


def _read_image(file: Path, spec: DataSpec) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3), resized to the declared size."""
    with Image.open(file) as opened:
        opened.load()
        picture = _to_8_bit_grey(opened) if opened.mode in _HIGH_BIT_DEPTH_MODES else opened
        picture = picture.convert("L" if spec.channels == 1 else "RGB")
    size = (spec.image_size, spec.image_size)
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(picture, dtype=np.uint8)


def _to_8_bit_grey(picture: Image.Image) -> Image.Image:
    """Scale 16-bit or 32-bit integer grey pixels to 0..255; Pillow would clip them."""
    values = np.asarray(picture).astype(np.float64)
    sixteen_bit = picture.mode.startswith("I;16") or values.max(initial=0) > 255
    full_scale = 65535.0 if sixteen_bit else 255.0
    scaled = np.clip(np.rint(values / full_scale * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)


def class_folder_hint(name: str, class_names: tuple[str, ...]) -> str:
    """`` (did you mean `x`? …)`` for a folder named like a declared class or a split, else "".

    Class folder names are matched exactly (case-sensitive) on every file system, so a
    case variant such as ``Pneumonia`` is never read as ``pneumonia``: it must be renamed.
    """
    for known in class_names:
        if name.lower() == known.lower():
            return f" (did you mean `{known}`? Class folder names are case-sensitive: rename it)"
    if name.lower() in SPLIT_NAMES:
        return f" (did you mean the split folder `{name.lower()}`? Split names are lower case)"
    lowered = {known.lower(): known for known in class_names}
    close = difflib.get_close_matches(name.lower().strip(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean `{lowered[close[0]]}`?)" if close else ""


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image_file(path: Path) -> bool:
    visible = not path.name.startswith(".")
    return visible and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()

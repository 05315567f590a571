from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.folder import load_image_folder, write_image_folder
from common.data.schema import DataSpec, Split
from common.errors import DataError

CLASSES = ("normal", "pneumonia")


def spec(channels: int = 1, size: int = 8) -> DataSpec:
    return DataSpec(CLASSES, image_size=size, channels=channels, min_examples=1)


def write_image(path: Path, value: int = 100, size: int = 8, mode: str = "L") -> Path:
    """A uniform image of ``value`` (every channel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value,) * 3).save(path)
    return path


def test_class_folders_become_the_train_split(tmp_path: Path) -> None:
    write_image(tmp_path / "pneumonia" / "b.png", value=30)
    write_image(tmp_path / "normal" / "b.jpg", value=20)
    write_image(tmp_path / "normal" / "a.PNG", value=10)
    (tmp_path / "normal" / "notes.txt").write_text("ignored")
    write_image(tmp_path / ".thumbnails" / "x.png")

    splits = load_image_folder(tmp_path, spec(), "hospital-0")

    assert list(splits) == ["train"]
    np.testing.assert_array_equal(splits["train"].labels, [0, 0, 1])
    means = splits["train"].images.mean(axis=(1, 2, 3)) * 255
    np.testing.assert_allclose(means, [10, 20, 30], atol=2)  # jpg is lossy


def test_split_folders_are_read_separately(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "normal" / "0.png")
    write_image(tmp_path / "train" / "pneumonia" / "0.jpeg")
    write_image(tmp_path / "test" / "pneumonia" / "0.png")

    splits = load_image_folder(tmp_path, spec(), "hospital-0")

    assert {name: split.labels.tolist() for name, split in splits.items()} == {
        "test": [1],
        "train": [0, 1],
    }


@pytest.mark.parametrize(
    ("channels", "mode", "shape"),
    [(1, "RGB", (1, 8, 8, 1)), (3, "L", (1, 8, 8, 3)), (3, "RGB", (1, 8, 8, 3))],
    ids=["colour file, grey spec", "grey file, colour spec", "colour"],
)
def test_converts_to_declared_channels(
    tmp_path: Path, channels: int, mode: str, shape: tuple[int, ...]
) -> None:
    write_image(tmp_path / "normal" / "0.png", value=51, mode=mode)

    images = load_image_folder(tmp_path, spec(channels), "hospital-0")["train"].images

    assert images.shape == shape
    np.testing.assert_allclose(images, 0.2, atol=1e-6)


def test_resizes_to_declared_size(tmp_path: Path) -> None:
    write_image(tmp_path / "normal" / "0.png", value=102, size=20)

    images = load_image_folder(tmp_path, spec(size=8), "hospital-0")["train"].images

    assert images.shape == (1, 8, 8, 1)
    np.testing.assert_allclose(images, 0.4, atol=1e-6)


def test_scales_16_bit_png_instead_of_clipping(tmp_path: Path) -> None:
    path = tmp_path / "normal" / "0.png"
    path.parent.mkdir()
    Image.fromarray(np.full((8, 8), 65535 // 5, dtype=np.uint16)).save(path)

    images = load_image_folder(tmp_path, spec(), "hospital-0")["train"].images

    np.testing.assert_allclose(images, 0.2, atol=1 / 255)


def _layout_problems(root: Path, case: str) -> list[str]:
    """Build the broken folder of ``case`` under ``root``; return the expected problems."""
    declared = "declared classes: normal, pneumonia"
    if case == "unknown class folder":
        write_image(root / "normal" / "0.png")
        write_image(root / "cat" / "0.png")
        return [f"`{root / 'cat'}`: unknown class folder `cat`; {declared}"]
    if case == "empty split":
        write_image(root / "test" / "normal" / "0.png")
        (root / "train" / "normal").mkdir(parents=True)
        return [f"`{root / 'train'}`: no images (.png, .jpg, .jpeg)"]
    if case == "corrupt image":
        write_image(root / "normal" / "0.png")
        bad = root / "normal" / "1.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        return [
            f"`{bad}`: unreadable image (UnidentifiedImageError: cannot identify image "
            f"file '{bad}')"
        ]
    if case == "truncated image":
        good = write_image(root / "normal" / "0.png", size=64)
        good.write_bytes(good.read_bytes()[:60])
        return [f"`{good}`: unreadable image (OSError: image file is truncated)"]
    if case == "no folders":
        write_image(root / "0.png")
        return [
            f"`{root}`: expected class folders (normal, pneumonia) or split folders "
            "(train, val, test), found none"
        ]
    if case == "no train folder":
        write_image(root / "test" / "normal" / "0.png")
        return [f"`{root}`: missing `train` folder"]
    if case == "stray folder beside splits":
        write_image(root / "train" / "normal" / "0.png")
        write_image(root / "normal" / "0.png")
        return [
            f"`{root / 'normal'}`: unexpected folder beside split folders; "
            "expected only train, val, test"
        ]
    if case == "several problems":
        write_image(root / "train" / "dog" / "0.png")
        (root / "train" / "normal").mkdir()
        (root / "train" / "normal" / "0.png").write_bytes(b"junk")
        (root / "val" / "normal").mkdir(parents=True)
        bad = root / "train" / "normal" / "0.png"
        return [
            f"`{root / 'train' / 'dog'}`: unknown class folder `dog`; {declared}",
            f"`{bad}`: unreadable image (UnidentifiedImageError: cannot identify image "
            f"file '{bad}')",
            f"`{root / 'val'}`: no images (.png, .jpg, .jpeg)",
        ]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "unknown class folder",
        "empty split",
        "corrupt image",
        "truncated image",
        "no folders",
        "no train folder",
        "stray folder beside splits",
        "several problems",
    ],
)
def test_reports_every_problem_in_one_error(tmp_path: Path, case: str) -> None:
    expected = _layout_problems(tmp_path, case)

    with pytest.raises(DataError) as caught:
        load_image_folder(tmp_path, spec(), "hospital-2")

    assert caught.value.problems == expected
    assert caught.value.source == "hospital-2"


def test_missing_root_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        load_image_folder(tmp_path / "absent", spec(), "hospital-2")


@pytest.mark.parametrize("channels", [1, 3])
def test_write_then_load_round_trips(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(0)
    splits = {
        name: Split(rng.random((n, 8, 8, channels), dtype=np.float32), rng.integers(0, 2, n))
        for name, n in (("train", 12), ("test", 5))
    }

    write_image_folder(tmp_path, splits, CLASSES)
    loaded = load_image_folder(tmp_path, spec(channels), "hospital-0")

    for name, split in splits.items():
        order = np.argsort(split.labels, kind="stable")  # loader groups by class folder
        np.testing.assert_array_equal(loaded[name].labels, split.labels[order])
        np.testing.assert_allclose(loaded[name].images, split.images[order], atol=0.5 / 255)
    names = {p.name for p in (tmp_path / "train" / "normal").iterdir()}
    assert names == {f"{i:02d}.png" for i in np.flatnonzero(splits["train"].labels == 0)}

"""DICOM sites: pixel transforms against hand calculations, labels.csv, every problem named."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.config import parse_app_config
from common.contract import DATA_KINDS
from common.data.dicom import load_dicom_folder, read_dicom_image
from common.data.dicom_write import dicom_dataset, write_dicom, write_dicom_site, write_labels
from common.data.schema import DataSpec, Split
from common.data.site import data_kind, load_splits
from common.data.synthetic import synthetic_site
from common.errors import DataError
from common.manifest import declared_defaults, project_root

CLASSES = ("normal", "pneumonia")


def spec(size: int = 2, channels: int = 1) -> DataSpec:
    return DataSpec(CLASSES, size, channels, min_examples=1)


def grey(values: list[list[int]]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint16)


def dicom_file(path: Path, pixels: np.ndarray, **attributes: Any) -> Path:
    write_dicom(path, dicom_dataset(pixels, **attributes))
    return path


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR), written out independently, output in [0, 1]."""
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    inside = (values - (center - 0.5)) / (width - 1) + 0.5
    return np.where(values <= low, 0.0, np.where(values > high, 1.0, inside))


# -- pixels ---------------------------------------------------------------------------


def test_rescale_then_window_matches_the_hand_calculation(tmp_path: Path) -> None:
    # Prepare: stored 0..300, slope 2, intercept -100 -> -100, 100, 300, 500
    stored = grey([[0, 100], [200, 300]])
    file = dicom_file(
        tmp_path / "a.dcm",
        stored,
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=200,
        WindowWidth=301,
    )
    expected = linear_window(stored * 2.0 - 100.0, center=200, width=301)

    # Execute
    image = read_dicom_image(file, spec())

    # Assert
    assert image.dtype == np.float32
    assert image.shape == (2, 2, 1)
    np.testing.assert_allclose(image[..., 0], expected, atol=1e-6)
    np.testing.assert_allclose(expected, [[0.0, 0.168333], [0.835, 1.0]], atol=1e-6)


def test_voi_lut_sequence_is_used_over_its_output_range(tmp_path: Path) -> None:
    # Prepare: an 8-bit VOI LUT of 4 entries starting at stored value 0
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [4, 0, 8])
    lut.add_new("LUTData", "US", [0, 51, 204, 255])
    file = dicom_file(tmp_path / "a.dcm", grey([[0, 1], [2, 3]]), VOILUTSequence=[lut])

    # Execute
    image = read_dicom_image(file, spec())

    # Assert
    np.testing.assert_allclose(image[..., 0], [[0.0, 0.2], [0.8, 1.0]], atol=1e-6)


def test_without_a_window_the_rescaled_values_are_min_max_scaled(tmp_path: Path) -> None:
    stored = grey([[10, 20], [30, 50]])
    file = dicom_file(tmp_path / "a.dcm", stored, RescaleSlope=3, RescaleIntercept=7)

    image = read_dicom_image(file, spec())

    np.testing.assert_allclose(image[..., 0], (stored - 10.0) / 40.0, atol=1e-6)


@pytest.mark.parametrize(
    "window", [{}, {"WindowCenter": 20, "WindowWidth": 30}], ids=["min-max", "window"]
)
def test_monochrome1_is_the_inverse_of_monochrome2(
    tmp_path: Path, window: dict[str, float]
) -> None:
    # Prepare
    stored = grey([[10, 20], [30, 50]])
    two = dicom_file(tmp_path / "two.dcm", stored, **window)
    one = dicom_file(
        tmp_path / "one.dcm", stored, PhotometricInterpretation="MONOCHROME1", **window
    )

    # Execute
    image_two, image_one = read_dicom_image(two, spec()), read_dicom_image(one, spec())

    # Assert
    np.testing.assert_allclose(image_one, 1.0 - image_two, atol=1e-6)
    assert image_two.max() > image_two.min()


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (3, 1), (8, 3)])
def test_resized_to_the_declared_size_and_channels(
    tmp_path: Path, size: int, channels: int
) -> None:
    file = dicom_file(tmp_path / "a.dcm", np.arange(16, dtype=np.uint16).reshape(4, 4))

    image = read_dicom_image(file, spec(size, channels))

    assert image.shape == (size, size, channels)
    assert image.min() >= 0.0
    assert image.max() <= 1.0
    assert np.array_equal(image[..., :1].repeat(channels, axis=-1), image)


def test_rgb_file_in_a_grey_federation_becomes_its_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 0, 255)
    file = dicom_file(tmp_path / "a.dcm", rgb)

    image = read_dicom_image(file, spec())

    np.testing.assert_allclose(image[..., 0], [[0.299, 0.0], [0.0, 0.114]], atol=1e-6)


def test_written_site_reads_back_within_its_12_bit_precision(tmp_path: Path) -> None:
    # Prepare
    declared = DataSpec(CLASSES, 28, 1, 10)
    site = synthetic_site(1, 0, 20, declared)
    splits = {"train": site.train, "test": site.test}

    # Execute
    write_dicom_site(tmp_path, splits, CLASSES)
    loaded = load_splits(tmp_path, declared, "site-1")

    # Assert
    assert data_kind(tmp_path) == "dicom"
    assert list(loaded) == ["train", "test"]
    for name, split in splits.items():
        np.testing.assert_array_equal(loaded[name].labels, split.labels)
        np.testing.assert_allclose(loaded[name].images, split.images, atol=1 / 8190 + 1e-7)


# -- labels.csv: which file goes where --------------------------------------------------


def test_every_labelled_file_is_loaded_exactly_once_into_its_split(tmp_path: Path) -> None:
    # Prepare: file i is a constant image of stored value 100 * i; the window maps
    # stored values v to v / 4095, so each loaded image names its file.
    window = {"WindowCenter": 2048, "WindowWidth": 4096}
    rows = [
        ("a/0.dcm", "normal", "train"),
        ("a/1.dcm", "pneumonia", ""),
        ("b/c/2.dcm", "pneumonia", "val"),
        ("3.dcm", "normal", "test"),
        ("4.DCM", "pneumonia", "test"),
        ("a/5.dcm", "normal", "train"),
    ]
    for i, (path, _, _) in enumerate(rows):
        dicom_file(tmp_path / path, np.full((2, 2), 100 * i, dtype=np.uint16), **window)
    write_labels(tmp_path, rows)
    expected = {"train": {0: 0, 1: 1, 5: 0}, "val": {2: 1}, "test": {3: 0, 4: 1}}

    # Execute
    splits = load_dicom_folder(tmp_path, spec(), "site-1")

    # Assert
    assert set(splits) == set(expected)
    for name, split in splits.items():
        files = np.rint(split.images[:, 0, 0, 0] * 4095 / 100).astype(int).tolist()
        assert sorted(files) == sorted(expected[name])
        assert dict(zip(files, split.labels.tolist(), strict=True)) == expected[name]


def test_two_column_header_puts_everything_in_train(tmp_path: Path) -> None:
    dicom_file(tmp_path / "x.dcm", grey([[0, 1], [2, 3]]))
    write_labels(tmp_path, [("x.dcm", "pneumonia")], header="path,label")

    splits = load_dicom_folder(tmp_path, spec(), "site-1")

    assert list(splits) == ["train"]
    assert splits["train"].labels.tolist() == [1]


# -- every problem names its file ---------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A site: DICOM files written by ``build``, labels.csv text, the problems expected."""

    name: str
    labels: str
    problems: list[str]
    build: Callable[[Path], None] = field(default=lambda root: None)


def _good(root: Path, name: str = "ok.dcm") -> None:
    dicom_file(root / name, grey([[0, 1], [2, 3]]))


def _junk(root: Path) -> None:
    _good(root)
    (root / "junk.dcm").write_bytes(b"not a dicom file at all")


def _no_pixels(root: Path) -> None:
    _good(root)
    dataset = dicom_dataset(grey([[0, 1], [2, 3]]))
    del dataset.PixelData
    write_dicom(root / "empty.dcm", dataset)


def _compressed(root: Path) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    _good(root)
    dataset = dicom_dataset(grey([[0, 1], [2, 3]]))
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
    dataset.PixelData = encapsulate([b"\xff\xd8junk\xff\xd9"])
    dataset["PixelData"].VR = "OB"
    write_dicom(root / "jpegls.dcm", dataset)


def _multi_frame(root: Path) -> None:
    _good(root)
    frames = np.arange(12, dtype=np.uint16).reshape(3, 2, 2)
    dataset = dicom_dataset(frames[0], NumberOfFrames=3)
    dataset.PixelData = frames.tobytes()
    write_dicom(root / "cine.dcm", dataset)


def _unlabelled(root: Path) -> None:
    _good(root)
    _good(root, "deep/extra.dcm")
    (root / "notes.txt").write_text("ignored: not DICOM")
    _good(root, ".hidden.dcm")


HEADER = "path,label,split\n"
BAD_CASES = [
    Bad(
        "not-dicom",
        HEADER + "ok.dcm,normal,train\njunk.dcm,normal,train\n",
        ["`{root}/junk.dcm`: not a DICOM file (no `DICM` marker at byte 128)"],
        _junk,
    ),
    Bad(
        "no-pixel-data",
        HEADER + "ok.dcm,normal,\nempty.dcm,normal,\n",
        ["`{root}/empty.dcm`: no pixel data"],
        _no_pixels,
    ),
    Bad(
        "compressed-without-decoder",
        HEADER + "ok.dcm,normal,\njpegls.dcm,pneumonia,\n",
        [
            "`{root}/jpegls.dcm`: compressed transfer syntax JPEG-LS Lossless Image Compression"
            " and no decoder installed (install one of: gdcm, pylibjpeg, pyjpegls)"
        ],
        _compressed,
    ),
    Bad(
        "multi-frame",
        HEADER + "ok.dcm,normal,\ncine.dcm,normal,\n",
        ["`{root}/cine.dcm`: multi-frame (3 frames); expected one image per file"],
        _multi_frame,
    ),
    Bad(
        "label-for-missing-file",
        HEADER + "ok.dcm,normal,\ngone.dcm,normal,\n",
        ["`{root}/gone.dcm`: labelled in `labels.csv` line 3, not found"],
        _good,
    ),
    Bad(
        "file-without-label",
        HEADER + "ok.dcm,normal,\n",
        ["`{root}/deep/extra.dcm`: DICOM file without a label in `labels.csv`"],
        _unlabelled,
    ),
    Bad(
        "unknown-class",
        HEADER + "ok.dcm,Pneumonia,train\n",
        [
            "`{root}/labels.csv` line 2: unknown class `Pneumonia` (did you mean `pneumonia`?);"
            " declared classes: normal, pneumonia"
        ],
        _good,
    ),
    Bad(
        "unknown-class-nothing-close",
        HEADER + "ok.dcm,covid,train\n",
        ["`{root}/labels.csv` line 2: unknown class `covid`; declared classes: normal, pneumonia"],
        _good,
    ),
    Bad(
        "bad-split",
        HEADER + "ok.dcm,normal,training\n",
        [
            "`{root}/labels.csv` line 2: unknown split `training` (did you mean `train`?);"
            " expected one of train, val, test (empty: train)"
        ],
        _good,
    ),
    Bad(
        "bad-header",
        "file,class\nok.dcm,normal\n",
        [
            "`{root}/labels.csv` line 1: expected the header `path,label` or "
            "`path,label,split`, received `file,class`"
        ],
    ),
    Bad(
        "wrong-column-count",
        HEADER + "ok.dcm,normal\n",
        ["`{root}/labels.csv` line 2: expected 3 columns, received 2"],
        _good,
    ),
    Bad(
        "listed-twice",
        HEADER + "ok.dcm,normal,\n./ok.dcm,pneumonia,\n",
        ["`{root}/labels.csv` line 3: `ok.dcm` is listed again (first on line 2)"],
        _good,
    ),
    Bad(
        "path-outside-the-folder",
        HEADER + "ok.dcm,normal,\n../ok.dcm,normal,\n",
        [
            "`{root}/labels.csv` line 3: expected a path relative to the folder, with `/` "
            "separators, received `../ok.dcm`"
        ],
        _good,
    ),
    Bad(
        "empty",
        "",
        [
            "`{root}/labels.csv`: empty; expected the header `path,label[,split]` and one row "
            "per DICOM file"
        ],
    ),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[case.name for case in BAD_CASES])
def test_every_problem_names_its_file(tmp_path: Path, case: Bad) -> None:
    # Prepare
    root = tmp_path / "site"
    root.mkdir()
    case.build(root)
    (root / "labels.csv").write_text(case.labels, encoding="utf-8")

    # Execute
    with pytest.raises(DataError) as raised:
        load_splits(root, spec(), "st-marys")

    # Assert
    assert raised.value.source == "st-marys"
    assert raised.value.problems == [p.format(root=root) for p in case.problems]


def test_problems_of_every_file_are_collected(tmp_path: Path) -> None:
    # Prepare: three broken files and a good one
    _junk(tmp_path)
    _multi_frame(tmp_path)
    _no_pixels(tmp_path)
    names = ("cine.dcm", "empty.dcm", "junk.dcm", "ok.dcm")
    write_labels(tmp_path, [(name, "normal", "train") for name in names])

    # Execute
    with pytest.raises(DataError) as raised:
        load_dicom_folder(tmp_path, spec(), "st-marys")

    # Assert
    named = [problem.split("`")[1] for problem in raised.value.problems]
    assert named == [str(tmp_path / name) for name in names[:3]]


# -- wiring: config, contract, simulated hospitals ----------------------------------------


def test_a_natural_simulation_gives_each_hospital_one_dicom_site(tmp_path: Path) -> None:
    # Prepare: two DICOM sites under one root, with their own splits
    from simulations.hospitals import simulated_hospital

    declared = DataSpec(CLASSES, 28, 1, 10)
    written = [synthetic_site(3, i, 20, declared) for i in range(2)]
    for name, site in zip(("site-a", "site-b"), written, strict=True):
        write_dicom_site(tmp_path / name, {"train": site.train, "test": site.test}, CLASSES)
    overrides = {"dataset": "dicom", "data-path": str(tmp_path), "partitioner": "natural"}
    values = {**declared_defaults(project_root() / "pyproject.toml"), **overrides}
    config = parse_app_config({**values, "min-examples": 1, "val-fraction": 0.0})

    # Execute
    hospitals = [simulated_hospital(config.data, config.seed, i, 2) for i in range(2)]

    # Assert: hospital i holds site i's images, split for split
    for hospital, site in zip(hospitals, written, strict=True):
        np.testing.assert_array_equal(hospital.train.labels, site.train.labels)
        np.testing.assert_allclose(hospital.test.images, site.test.images, atol=1 / 8190 + 1e-7)
    assert {"dicom", "simulated-dicom"} <= set(DATA_KINDS)


def test_split_without_images_is_not_created(tmp_path: Path) -> None:
    _good(tmp_path)
    write_labels(tmp_path, [("ok.dcm", "normal", "test")])

    splits = load_dicom_folder(tmp_path, spec(), "site-1")

    assert list(splits) == ["test"]
    assert isinstance(splits["test"], Split)

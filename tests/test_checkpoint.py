"""Checkpoints: round trip of weights, strategy state, history and RNG; pruning; refusals;
a strategy whose state attributes Flower renamed."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

from common.errors import RunError
from server.app import build_validating_strategy
from server.centered_clip import CenteredClipping
from server.checkpoint import (
    Checkpoint,
    check_fit,
    check_strategy_state,
    checkpoint_path,
    fit_of,
    list_checkpoints,
    read_checkpoint,
    restore_rng_state,
    restore_strategy_state,
    rng_state,
    save_checkpoint,
    scan_checkpoints,
    set_aside,
    strategy_state,
)
from server.privacy import accountant_of, privacy_state, restore_privacy_state
from server.strategies import build_strategy
from server.validation import ValidatingStrategy
from tests.factories import app_config


def arrays(value: float = 1.0) -> ArrayRecord:
    return ArrayRecord([np.full((2, 3), value, np.float32), np.arange(4, dtype=np.float32)])


def checkpoint(server_round: int, **overrides: Any) -> Checkpoint:
    values: dict[str, Any] = {
        "server_round": server_round,
        "arrays": arrays(float(server_round)),
        "strategy_state": {},
        "rounds": [{"round": r, "evaluate": {"auc": None}} for r in range(1, server_round + 1)],
        "rng": rng_state(),
        "fit": fit_of(app_config()),
    }
    return Checkpoint(**{**values, **overrides})


def assert_same_arrays(got: Any, expected: Any) -> None:
    if isinstance(expected, ArrayRecord):
        assert list(got.keys()) == list(expected.keys())
        got, expected = got.to_numpy_ndarrays(), expected.to_numpy_ndarrays()
    if isinstance(expected, dict):
        assert list(got) == list(expected)
        got, expected = list(got.values()), list(expected.values())
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    saved = checkpoint(3)

    path = save_checkpoint(tmp_path, saved, keep=3)
    loaded = read_checkpoint(path)

    assert path == tmp_path / "checkpoints" / "round-00003.npz"
    assert loaded.server_round == 3
    assert_same_arrays(loaded.arrays, saved.arrays)
    assert (loaded.rounds, loaded.rng, loaded.fit) == (saved.rounds, saved.rng, saved.fit)
    assert [p.name for p in tmp_path.joinpath("checkpoints").iterdir()] == ["round-00003.npz"]


@pytest.mark.parametrize(
    ("strategy", "state"),
    [
        (FedAdam(), {"m_t": {"a": np.ones(3)}, "v_t": {"a": np.full(3, 2.0)},
                     "current_arrays": {"a": np.zeros(3, np.float32)}}),
        (FedAvgM(), {"momentum_vector": [np.ones(2), np.zeros((2, 2))],
                     "current_arrays": arrays(4.0)}),
        (CenteredClipping(), {"center": [np.full((2, 3), -0.5), np.arange(4.0)],
                              "current_arrays": arrays(2.0)}),
        (FedAvg(), {}),
    ],
)  # fmt: skip
def test_strategy_state_survives_a_checkpoint(
    tmp_path: Path, strategy: Any, state: dict[str, Any]
) -> None:
    for name, value in state.items():
        setattr(strategy, name, value)
    wrapped = ValidatingStrategy(strategy, max_update_norm=0.0, min_valid_replies=1)
    path = save_checkpoint(tmp_path, checkpoint(1, strategy_state=strategy_state(wrapped)), 1)
    fresh = ValidatingStrategy(type(strategy)(), max_update_norm=0.0, min_valid_replies=1)

    restore_strategy_state(fresh, read_checkpoint(path).strategy_state)

    assert set(strategy_state(fresh)) == set(state)
    for name, value in state.items():
        assert_same_arrays(getattr(fresh.strategy, name), value)


def test_rng_state_restores_python_and_numpy_draws() -> None:
    state = rng_state()
    expected = (random.sample(range(1000), 5), np.random.rand(3).tolist())

    restore_rng_state(state)

    assert (random.sample(range(1000), 5), np.random.rand(3).tolist()) == expected


def test_keeps_only_the_newest(tmp_path: Path) -> None:
    for server_round in range(1, 6):
        save_checkpoint(tmp_path, checkpoint(server_round), keep=2)

    assert [p.name for p in list_checkpoints(tmp_path)] == ["round-00005.npz", "round-00004.npz"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "round-00004.npz",
        "round-00005.npz",
    ]  # no temporary files left behind


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        (1, ["round-00009.npz", "round-00003.npz"]),
        (2, ["round-00009.npz", "round-00003.npz", "round-00002.npz"]),
        (5, ["round-00009.npz", "round-00003.npz", "round-00002.npz", "round-00001.npz"]),
    ],
)
def test_pruning_keeps_the_fresh_checkpoint_despite_a_broken_higher_one(
    tmp_path: Path, keep: int, expected: list[str]
) -> None:
    for server_round in (1, 2):
        save_checkpoint(tmp_path, checkpoint(server_round), keep=5)
    checkpoint_path(tmp_path, 9).write_bytes(b"broken")  # left over, never loadable

    fresh = save_checkpoint(tmp_path, checkpoint(3), keep=keep)

    assert [p.name for p in list_checkpoints(tmp_path)] == expected
    assert read_checkpoint(fresh).server_round == 3
    assert checkpoint_path(tmp_path, 9).read_bytes() == b"broken"  # not ours to delete


def test_checkpoints_are_ordered_by_round_number_not_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("round-99999.npz", "round-100000.npz", "round-00002.npz", ".round-7.npz"):
        (folder / name).write_bytes(b"")

    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "round-100000.npz",
        "round-99999.npz",
        "round-00002.npz",
    ]


def half_of_a_checkpoint(tmp_path: Path) -> bytes:
    data = save_checkpoint(tmp_path / "whole", checkpoint(1), keep=1).read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (half_of_a_checkpoint, "BadZipFile"),  # a write cut short without the atomic rename
        (lambda _: b"", "EOFError"),
        (lambda _: b"not a checkpoint", "ValueError"),  # numpy takes it for a pickle
    ],
)
def test_scan_skips_unreadable_checkpoints_and_names_them(
    tmp_path: Path, damage: Callable[[Path], bytes], error: str
) -> None:
    save_checkpoint(tmp_path, checkpoint(1), keep=3)
    checkpoint_path(tmp_path, 2).write_bytes(damage(tmp_path))
    checkpoint_path(tmp_path, 3).write_bytes(damage(tmp_path))

    scan = scan_checkpoints(tmp_path)

    assert scan.newest is not None
    assert (scan.newest[0], scan.newest[1].server_round) == (checkpoint_path(tmp_path, 1), 1)
    assert [(path, why.split(":")[0]) for path, why in scan.unreadable] == [
        (checkpoint_path(tmp_path, 3), error),
        (checkpoint_path(tmp_path, 2), error),
    ]


def test_setting_aside_keeps_every_unreadable_file(tmp_path: Path) -> None:
    broken = checkpoint_path(tmp_path, 3)
    broken.parent.mkdir()
    for content in (b"first", b"second"):
        broken.write_bytes(content)
        set_aside(broken, "BadZipFile: File is not a zip file")

    unreadable = tmp_path / "checkpoints" / "unreadable"
    assert not broken.exists()
    assert sorted((p.name, p.read_bytes()) for p in unreadable.iterdir()) == [
        ("round-00003.1.npz", b"second"),
        ("round-00003.npz", b"first"),
    ]
    assert list_checkpoints(tmp_path) == []  # set-aside files are no longer checkpoints


def test_no_checkpoint_scans_empty(tmp_path: Path) -> None:
    scan = scan_checkpoints(tmp_path)

    assert (scan.newest, scan.unreadable) == (None, [])


class RenamedMomentFedAdam(FedAdam):
    """FedAdam as if Flower had renamed ``m_t``."""

    def __init__(self) -> None:
        super().__init__()
        self.first_moment = self.m_t
        del self.m_t


class RenamedMomentumFedAvgM(FedAvgM):
    """FedAvgM as if Flower had renamed ``momentum_vector`` and ``current_arrays``."""

    def __init__(self) -> None:
        super().__init__()
        del self.momentum_vector
        del self.current_arrays


@pytest.mark.parametrize(
    ("strategy", "missing"),
    [
        (RenamedMomentFedAdam(), "`m_t`"),
        (RenamedMomentumFedAvgM(), "`momentum_vector`, `current_arrays`"),
    ],
)
def test_a_renamed_state_attribute_is_refused(strategy: Any, missing: str) -> None:
    wrapped = ValidatingStrategy(strategy, max_update_norm=0.0, min_valid_replies=1)

    with pytest.raises(RunError) as caught:
        check_strategy_state(wrapped)

    assert str(caught.value) == (
        f"Cannot checkpoint {type(strategy).__name__}: it has no attribute {missing}, so its "
        "state would not be saved and a resumed run would silently start it afresh "
        "(has Flower renamed it? update STRATEGY_STATE in server/checkpoint.py)."
    )


@pytest.mark.parametrize(
    "name",
    ["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedmedian",
     "fedtrimmedavg", "krum", "multikrum", "bulyan", "centeredclip"],
)  # fmt: skip
def test_every_offered_strategy_has_the_state_its_checkpoints_save(name: str) -> None:
    strategy = build_strategy(app_config(strategy=name))

    check_strategy_state(strategy)  # raises if Flower renamed an attribute


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (FedAdam(), {"m_t", "v_t", "current_arrays"}),
        (FedYogi(), {"m_t", "v_t", "current_arrays"}),
        (FedAdagrad(), {"m_t", "v_t", "current_arrays"}),
        (FedAvgM(), {"momentum_vector", "current_arrays"}),
        (CenteredClipping(), {"center", "current_arrays"}),
        (FedAvg(), set()),
    ],
)
def test_strategy_state_saves_the_declared_attributes_once_set(
    strategy: Any, expected: set[str]
) -> None:
    for name in expected:
        setattr(strategy, name, {"a": np.ones(1)})
    strategy.unrelated = {"a": np.ones(1)}

    state = strategy_state(ValidatingStrategy(strategy, max_update_norm=0.0, min_valid_replies=1))

    assert set(state) == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "cnn"}, "it was made with `model`='cnn-small', this run has `model`='cnn'."),
        ({"strategy": "fedadam"}, "it was made with `strategy`='fedavg', this run has `strategy`='fedadam'."),
        ({"class_names": "normal,pneumonia,covid"}, "it was made with `class-names`='normal,pneumonia', this run has `class-names`='normal,pneumonia,covid'."),
        ({"image_size": 32}, "it was made with `image-size`=28, this run has `image-size`=32."),
    ],
)  # fmt: skip
def test_refuses_a_checkpoint_of_another_run(change: dict[str, Any], message: str) -> None:
    made = checkpoint(2, fit=fit_of(app_config(model="cnn-small")))
    config = app_config(**{"model": "cnn-small", **change})

    with pytest.raises(RunError) as caught:
        check_fit(Path("ckpt.npz"), made, config, made.arrays)

    assert str(caught.value) == f"Cannot resume from ckpt.npz: {message}"


HOSPITAL_DP: dict[str, Any] = {
    "dp": "hospital", "dp_epsilon": 4.0, "dp_noise_multiplier": 1.5, "dp_clip_norm": 1.0,
}  # fmt: skip


@pytest.mark.parametrize(
    ("made_with", "change", "message"),
    [
        ({}, {"dp": "record", "dp_epsilon": 3.0}, "it was made with `dp`='off', this run has `dp`='record'."),
        (HOSPITAL_DP, {"dp": "off"}, "it was made with `dp`='hospital', this run has `dp`='off'."),
        (HOSPITAL_DP, {"dp_noise_multiplier": 2.0}, "it was made with `dp-noise-multiplier`=1.5, this run has `dp-noise-multiplier`=2.0."),
        (HOSPITAL_DP, {"dp_clip_norm": 0.5}, "it was made with `dp-clip-norm`=1.0, this run has `dp-clip-norm`=0.5."),
        (HOSPITAL_DP, {"dp_delta": 1e-6}, "it was made with `dp-delta`=1e-05, this run has `dp-delta`=1e-06."),
        (HOSPITAL_DP, {"dp_epsilon": 8.0}, "it was made with `dp-epsilon`=4.0, this run has `dp-epsilon`=8.0."),
        # calibrated noise depends on the rounds: a longer run would use another mechanism
        ({**HOSPITAL_DP, "dp_noise_multiplier": 0.0}, {"dp_noise_multiplier": 0.0, "num_server_rounds": 10},
         "it was made with `dp-noise-multiplier`="),
    ],
)  # fmt: skip
def test_refuses_a_checkpoint_made_under_other_dp_settings(
    made_with: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    made = checkpoint(2, fit=fit_of(app_config(**made_with)))
    config = app_config(**{**made_with, **change})

    with pytest.raises(RunError) as caught:
        check_fit(Path("ckpt.npz"), made, config, made.arrays)

    assert str(caught.value).startswith(f"Cannot resume from ckpt.npz: {message}")
    assert "\n" not in str(caught.value)


def test_a_checkpoint_from_before_dp_fits_a_run_without_dp() -> None:
    legacy_fit = {k: v for k, v in fit_of(app_config()).items() if k != "dp"}
    made = checkpoint(2, fit=legacy_fit)

    check_fit(Path("ckpt.npz"), made, app_config(), made.arrays)  # no refusal

    with pytest.raises(RunError):
        check_fit(Path("ckpt.npz"), made, app_config(dp="record", dp_epsilon=3.0), made.arrays)


def test_the_privacy_accountant_survives_a_checkpoint(tmp_path: Path) -> None:
    config = app_config(**HOSPITAL_DP)
    strategy = build_validating_strategy(config)
    accountant = accountant_of(strategy)
    assert accountant is not None
    accountant.compose(GaussianPrivacyEvent(1.5, 2, 2), 3)
    path = save_checkpoint(tmp_path, checkpoint(3, privacy=privacy_state(strategy)), 1)
    fresh = build_validating_strategy(config)

    restore_privacy_state(fresh, read_checkpoint(path).privacy, str(path))

    restored = accountant_of(fresh)
    assert restored is not None
    assert restored.state_dict() == accountant.state_dict()
    assert restored.get_epsilon(1e-5) == accountant.get_epsilon(1e-5)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (None, "Cannot resume from ckpt.npz: it holds no privacy accountant, so the ε this run "
               "already spent would be forgotten."),
        ({"schema_version": 99}, "Cannot resume from ckpt.npz: its privacy accountant does not "
                                 "fit this run (Unsupported accountant state schema version: 99.)"),
    ],
)  # fmt: skip
def test_resume_refuses_a_missing_or_foreign_accountant(
    state: dict[str, Any] | None, message: str
) -> None:
    strategy = build_validating_strategy(app_config(**HOSPITAL_DP))

    with pytest.raises(RunError) as caught:
        restore_privacy_state(strategy, state, "ckpt.npz")

    assert str(caught.value) == message


def test_refuses_weights_that_do_not_fit_the_model() -> None:
    made = checkpoint(2, fit=fit_of(app_config()))

    other_model = ArrayRecord([np.zeros(5, np.float32)])

    with pytest.raises(RunError) as caught:
        check_fit(Path("ckpt.npz"), made, app_config(), other_model)

    assert (
        str(caught.value) == "Cannot resume from ckpt.npz: its weights do not fit the model `cnn`."
    )

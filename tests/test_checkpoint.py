"""Checkpoints: round trip of weights, strategy state, history and RNG; pruning; refusals."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM

from common.errors import RunError
from server.checkpoint import (
    Checkpoint,
    check_fit,
    checkpoint_path,
    fit_of,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    restore_rng_state,
    restore_strategy_state,
    rng_state,
    save_checkpoint,
    strategy_state,
)
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


def test_latest_skips_an_unreadable_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, checkpoint(1), keep=3)
    checkpoint_path(tmp_path, 2).write_bytes(b"truncated")

    found = latest_checkpoint(tmp_path)

    assert found is not None
    assert found[1].server_round == 1


def test_no_checkpoint_is_none(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None


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


def test_refuses_weights_that_do_not_fit_the_model() -> None:
    made = checkpoint(2, fit=fit_of(app_config()))

    other_model = ArrayRecord([np.zeros(5, np.float32)])

    with pytest.raises(RunError) as caught:
        check_fit(Path("ckpt.npz"), made, app_config(), other_model)

    assert (
        str(caught.value) == "Cannot resume from ckpt.npz: its weights do not fit the model `cnn`."
    )

"""Simulated attackers: who attacks, what each attack sends, and where it reaches the server."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg

import common.plugins
from common.config import parse_app_config
from common.errors import ConfigError
from common.seeding import derive_seed
from server.adversaries import adversary_for
from server.app import federate
from server.report_settings import simulation_settings
from server.validation import ValidatingStrategy
from simulations.adversary import SimulatedAdversary, simulated_adversary
from simulations.attacks import (
    alie,
    alie_z,
    attacker_count,
    attacker_ids,
    flip_labels,
    gaussian,
    scaling,
    sign_flip,
)
from simulations.hospitals import simulated_hospital
from tests.conftest import ROOT
from tests.factories import app_config, run_config
from tests.fake_grid import FakeGrid, answers

Weights = list[np.ndarray]


def global_weights() -> Weights:
    return [
        np.array([[0.5, -1.0, 2.0], [0.0, 1.5, -0.25]], dtype=np.float32),
        np.array([1.0, -2.0], dtype=np.float32),
    ]


def trained(offset: float) -> Weights:
    return [
        (g + offset * np.arange(g.size).reshape(g.shape)).astype(np.float32)
        for g in global_weights()
    ]


def elementwise(rule: Callable[..., float], *weights: Weights) -> Weights:
    """The oracle: ``rule`` applied to each element, one Python float at a time."""
    return [
        np.array(
            [rule(*values) for values in zip(*(a.ravel() for a in arrays), strict=True)]
        ).reshape(arrays[0].shape)
        for arrays in zip(*weights, strict=True)
    ]


def assert_weights(got: Weights, expected: Weights) -> None:
    assert [a.dtype for a in got] == [np.dtype(np.float32)] * len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# --- attacks against their definitions ------------------------------------------------------


@pytest.mark.parametrize(
    ("attack", "scale", "rule"),
    [
        ("sign-flip", 1.0, lambda w, g: g - (w - g)),
        ("sign-flip", 3.0, lambda w, g: g - 3.0 * (w - g)),
        ("scaling", 10.0, lambda w, g: g + 10.0 * (w - g)),
        ("scaling", 0.5, lambda w, g: g + 0.5 * (w - g)),
    ],
)
def test_update_attack_matches_its_definition(
    attack: str, scale: float, rule: Callable[[float, float], float]
) -> None:
    weights, reference = trained(0.3), global_weights()
    function = {"sign-flip": sign_flip, "scaling": scaling}[attack]

    got = function(weights, reference, scale)

    assert_weights(got, elementwise(rule, weights, reference))


@pytest.mark.parametrize("scale", [0.1, 2.0])
def test_gaussian_is_the_global_model_plus_scaled_standard_normal_noise(scale: float) -> None:
    reference = global_weights()

    got = gaussian(reference, scale, np.random.default_rng(5))

    draws = np.random.default_rng(5)
    noise = [draws.standard_normal(g.shape) for g in reference]
    expected = elementwise(lambda g, e: g + scale * e, reference, noise)
    assert_weights(got, expected)


@pytest.mark.parametrize(
    ("hospitals", "attackers", "z"),
    [
        (10, 2, 0.2533471),  # s = 6 - 2 = 4: Φ⁻¹(0.6)
        (50, 12, 0.5828415),  # s = 26 - 12 = 14: Φ⁻¹(0.72)
        (10, 6, 1.2815516),  # s = 6 - 6 = 0 → 1: Φ⁻¹(0.9)
        (3, 1, 0.4307273),  # s = 2 - 1 = 1: Φ⁻¹(2/3)
        (4, 1, 0.0),  # s = 3 - 1 = 2: Φ⁻¹(0.5)
    ],
)
def test_alie_z_is_baruch_et_al_z_max(hospitals: int, attackers: int, z: float) -> None:
    assert alie_z(hospitals, attackers) == pytest.approx(z, abs=1e-6)


def test_alie_sends_benign_mean_minus_z_std_per_coordinate() -> None:
    benign = [trained(0.1), trained(-0.4), trained(0.9)]

    got = alie(benign, 1.5)

    def rule(*values: float) -> float:
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return mean - 1.5 * std

    assert_weights(got, elementwise(rule, *benign))


@pytest.mark.parametrize(
    ("labels", "classes", "expected"),
    [([0, 1, 1, 0], 2, [1, 0, 0, 1]), ([0, 1, 2, 3], 4, [3, 2, 1, 0]), ([2, 2], 3, [0, 0])],
)
def test_label_flip_mirrors_each_class(
    labels: list[int], classes: int, expected: list[int]
) -> None:
    got = flip_labels(np.array(labels, dtype=np.int64), classes)

    assert got.tolist() == expected
    assert got.dtype == np.int64


# --- who attacks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "hospitals", "count"),
    [
        (0.0, 10, 0), (0.34, 3, 1), (0.2, 10, 2), (0.25, 10, 3), (0.1, 5, 1), (0.49, 2, 1),
        (0.3, 1, 0),
    ],
)  # fmt: skip
def test_attackers_are_the_rounded_share_of_hospitals(
    fraction: float, hospitals: int, count: int
) -> None:
    chosen = attacker_ids(42, fraction, hospitals)

    assert attacker_count(fraction, hospitals) == count
    assert len(chosen) == count
    assert len(set(chosen)) == count
    assert all(0 <= i < hospitals for i in chosen)
    assert chosen == sorted(chosen)


def test_attackers_are_reproducible_by_seed() -> None:
    runs = {seed: [attacker_ids(seed, 0.3, 10) for _ in range(3)] for seed in range(6)}

    assert all(first == again for first, *rest in runs.values() for again in rest)
    assert len({tuple(chosen[0]) for chosen in runs.values()}) > 1  # the seed decides


# --- the coordinator-side adversary ----------------------------------------------------------


def train_reply(node: int, name: str, weights: Weights) -> Message:
    request = Message(content=RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    content = RecordDict(
        {
            "arrays": ArrayRecord([w.copy() for w in weights]),
            "metrics": MetricRecord({"num-examples": 10, "loss": 0.5, "accuracy": 0.75}),
            "site": ConfigRecord({"site-name": name, "data-kind": "simulated-synthetic"}),
        }
    )
    return Message(content=content, reply_to=request)


def error_reply(node: int) -> Message:
    request = Message(content=RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    return Message(Error(0, "crashed"), reply_to=request)


def sent(reply: Message) -> Weights:
    return reply.content.array_records["arrays"].to_numpy_ndarrays()


def adversary(attack: str, fraction: float, hospitals: int, scale: float = 1.0) -> Any:
    config = app_config(attack=attack, attack_fraction=fraction, attack_scale=scale, seed=3)
    return SimulatedAdversary(config.adversary, config.seed, lambda: hospitals)


OFFSETS = [0.1, -0.2, 0.4, 0.05, 0.3]


def round_replies() -> list[Message]:
    replies = [train_reply(i + 1, f"hospital-{i}", trained(o)) for i, o in enumerate(OFFSETS)]
    return [*replies, error_reply(9)]


@pytest.mark.parametrize(
    ("attack", "scale", "expected"),
    [
        ("sign-flip", 2.0, lambda w, g, benign, n, m: sign_flip(w, g, 2.0)),
        ("scaling", 10.0, lambda w, g, benign, n, m: scaling(w, g, 10.0)),
        ("alie", 1.0, lambda w, g, benign, n, m: alie(benign, alie_z(n, m))),
    ],
)
@pytest.mark.usefixtures("task_identity")
def test_the_adversary_changes_exactly_the_attackers_replies(
    attack: str, scale: float, expected: Callable[..., Weights]
) -> None:
    # Prepare
    attacking = attacker_ids(3, 0.4, len(OFFSETS))
    honest = [i for i in range(len(OFFSETS)) if i not in attacking]
    benign = [trained(OFFSETS[i]) for i in honest]
    tamper = adversary(attack, 0.4, len(OFFSETS), scale)

    # Execute
    replies = tamper(1, round_replies(), ArrayRecord(global_weights()))

    # Assert
    assert tamper.attackers() == [f"hospital-{i}" for i in attacking]
    assert len(attacking) == 2
    for i in honest:
        assert_weights(sent(replies[i]), trained(OFFSETS[i]))
    for i in attacking:
        want = expected(trained(OFFSETS[i]), global_weights(), benign, len(OFFSETS), 2)
        assert_weights(sent(replies[i]), want)
    assert replies[-1].has_error()


@pytest.mark.usefixtures("task_identity")
def test_gaussian_attackers_draw_their_own_reproducible_noise() -> None:
    tamper = adversary("gaussian", 0.4, len(OFFSETS), 0.5)
    name = tamper.attackers()[0]
    index = int(name.removeprefix("hospital-"))

    replies = tamper(4, round_replies(), ArrayRecord(global_weights()))

    rng = np.random.default_rng(derive_seed(3, "gaussian", name, 4))
    assert_weights(sent(replies[index]), gaussian(global_weights(), 0.5, rng))


@pytest.mark.parametrize("attack", ["label-flip", "none"])
@pytest.mark.usefixtures("task_identity")
def test_data_side_and_no_attack_leave_every_update_alone(attack: str) -> None:
    tamper = adversary(attack, 0.4, len(OFFSETS))

    replies = tamper(1, round_replies(), ArrayRecord(global_weights()))

    for i, offset in enumerate(OFFSETS):
        assert_weights(sent(replies[i]), trained(offset))


@pytest.mark.usefixtures("task_identity")
def test_attacked_updates_are_validated_like_any_other() -> None:
    # Prepare: scaling ×100 moves the attacker's update far past `max-update-norm`
    tamper = adversary("scaling", 0.2, len(OFFSETS), 100.0)
    strategy = ValidatingStrategy(FedAvg(), max_update_norm=5.0, min_valid_replies=2, tamper=tamper)
    strategy.current_arrays = ArrayRecord(global_weights())
    (attacker,) = attacker_ids(3, 0.2, len(OFFSETS))

    # Execute
    arrays, _ = strategy.aggregate_train(1, round_replies()[:-1])

    # Assert
    rejected = strategy.rejected(1, MessageType.TRAIN)
    assert list(rejected) == [attacker + 1]
    assert rejected[attacker + 1].startswith("update norm ")
    honest = [trained(o) for i, o in enumerate(OFFSETS) if i != attacker]
    mean = [np.mean([h[k] for h in honest], axis=0) for k in range(2)]
    assert arrays is not None
    assert_weights(arrays.to_numpy_ndarrays(), mean)


# --- label-flip in the attackers' data -------------------------------------------------------


def test_label_flip_attackers_train_on_flipped_labels() -> None:
    config = app_config(attack="label-flip", attack_fraction=0.34, synthetic_examples=40)
    (attacker,) = attacker_ids(config.seed, 0.34, 3)

    sites = [simulated_hospital(config.data, config.seed, i, 3, config.adversary) for i in range(3)]
    honest = [simulated_hospital(config.data, config.seed, i, 3) for i in range(3)]

    for i in range(3):
        labels = honest[i].train.labels
        expected = 1 - labels if i == attacker else labels
        assert sites[i].train.labels.tolist() == expected.tolist()
        np.testing.assert_array_equal(sites[i].train.images, honest[i].train.images)
        assert sites[i].test.labels.tolist() == honest[i].test.labels.tolist()


# --- how the coordinator reaches the adversary -----------------------------------------------


def test_no_attack_needs_no_adversary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.plugins, "entry_points", pytest.fail)

    assert adversary_for(app_config(), FakeGrid({})) is None


def test_an_attack_without_the_simulator_is_one_config_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(common.plugins, "entry_points", lambda **_: ())

    with pytest.raises(ConfigError) as raised:
        adversary_for(app_config(attack="sign-flip", attack_fraction=0.2), FakeGrid({}))

    assert str(raised.value) == (
        "`attack` needs the simulator's adversary (entry point `simulated` in "
        "`fedclinic.adversaries`), which is not installed here: attacks run only in "
        'simulations; set `attack = "none"` or reinstall fedclinic.'
    )


@pytest.mark.parametrize(
    ("group", "name", "target"),
    [
        ("fedclinic.adversaries", "simulated", "simulations.adversary:simulated_adversary"),
        ("fedclinic.simulation_mods", "unreliable", "simulations.unreliable:unreliable_hospital"),
    ],
)
def test_pyproject_registers_the_simulators_entry_points(
    group: str, name: str, target: str
) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    points = declared["project"]["entry-points"][group]
    module, attribute = points[name].split(":")

    assert points[name] == target
    assert callable(getattr(import_module(module), attribute))


def hospital_answers(node: int) -> Callable[[Message], Message]:
    """Node N is simulated ``hospital-(N-1)`` and moves every weight by 0.01·N."""
    answer = answers(0.01 * node)

    def behaviour(request: Message) -> Message:
        reply = answer(request)
        reply.content.config_records["site"] = ConfigRecord(
            {"site-name": f"hospital-{node - 1}", "data-kind": "simulated-synthetic"}
        )
        return reply

    return behaviour


@pytest.mark.usefixtures("task_identity")
def test_the_run_records_its_attackers(tmp_path: Path) -> None:
    # Prepare
    values = run_config(
        model="cnn-small",
        num_server_rounds=1,
        attack="sign-flip",
        attack_fraction=0.25,
        run_dir=str(tmp_path / "run"),
    )
    grid = FakeGrid({node: hospital_answers(node) for node in range(1, 5)})
    expected = [f"hospital-{i}" for i in attacker_ids(values["seed"], 0.25, 4)]

    # Execute
    run = federate(grid, parse_app_config(values), values, tmp_path, simulated_adversary)

    # Assert
    outcome = json.loads((run / "metrics.json").read_text("utf-8"))["outcome"]
    assert outcome["status"] == "completed"
    assert outcome["attackers"] == expected
    assert f"Simulated attack `sign-flip` by: {', '.join(expected)}." in (
        run / "report.md"
    ).read_text("utf-8")


@pytest.mark.parametrize(
    ("overrides", "shown"),
    [
        ({}, []),
        ({"attack": "alie", "attack_fraction": 0.2}, ["attack", "attack-fraction", "attack-scale"]),
        ({"straggler_rate": 0.1}, ["dropout-rate", "straggler-rate", "straggler-delay"]),
        ({"shift_strength": 1.0}, ["shift-strength"]),
    ],
)
def test_the_report_shows_attack_and_fault_settings_when_set(
    overrides: dict[str, Any], shown: list[str]
) -> None:
    config = run_config(**overrides)
    simulated = [{"data-kind": "simulated-synthetic"}]

    keys = [key for key, _ in simulation_settings(config, simulated)]

    assert keys == [
        "dataset",
        "data-path",
        "partitioner",
        "dirichlet-alpha",
        "synthetic-examples",
        *shown,
    ]

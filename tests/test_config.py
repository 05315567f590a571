from __future__ import annotations

from typing import Any

import pytest

from common.config import SYNTHETIC_MIN_IMAGE_SIZE, parse_app_config, parse_train_config
from common.data.schema import DataSpec
from common.data.synthetic import synthetic_site
from common.errors import ConfigError
from common.manifest import declared_defaults, project_root, with_overrides
from tests.factories import run_config


def test_declared_defaults_parse() -> None:
    config = parse_app_config(run_config())

    assert config.federation.num_server_rounds == 5
    assert config.data.spec().class_names == ("normal", "pneumonia")
    assert config.data.spec().input_shape == (28, 28, 1)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("local-epochs", 0, "Invalid value for `local-epochs`. Expected an integer ≥ 1. Received: 0"),
        ("local-epochs", 1.5, "Invalid value for `local-epochs`. Expected an integer ≥ 1. Received: 1.5"),
        ("batch-size", "32", "Invalid value for `batch-size`. Expected an integer ≥ 1. Received: '32'"),
        ("learning-rate", 0.0, "Invalid value for `learning-rate`. Expected a number > 0.0. Received: 0.0"),
        ("local-steps", -1, "Invalid value for `local-steps`. Expected an integer ≥ 0. Received: -1"),
        ("local-steps", 2.0, "Invalid value for `local-steps`. Expected an integer ≥ 0. Received: 2.0"),
        ("local-optimizer", "rmsprop", "Invalid value for `local-optimizer`. Expected one of 'adam', 'sgd'. Received: 'rmsprop'"),
        ("local-momentum", 1.0, "Invalid value for `local-momentum`. Expected a number ≥ 0.0 and < 1.0. Received: 1.0"),
        ("local-momentum", -0.1, "Invalid value for `local-momentum`. Expected a number ≥ 0.0 and < 1.0. Received: -0.1"),
        ("augment", "on", "Invalid value for `augment`. Expected true or false. Received: 'on'"),
        ("augment-shift", 0.6, "Invalid value for `augment-shift`. Expected a number ≥ 0.0 and ≤ 0.5. Received: 0.6"),
        ("augment-rotation", -5.0, "Invalid value for `augment-rotation`. Expected a number ≥ 0.0 and ≤ 180.0. Received: -5.0"),
        ("augment-intensity", 1.5, "Invalid value for `augment-intensity`. Expected a number ≥ 0.0 and ≤ 1.0. Received: 1.5"),
        ("augment-contrast", 1.0, "Invalid value for `augment-contrast`. Expected a number ≥ 0.0 and < 1.0. Received: 1.0"),
        ("fraction-train", 1.5, "Invalid value for `fraction-train`. Expected a number > 0.0 and ≤ 1.0. Received: 1.5"),
        ("num-server-rounds", -1, "Invalid value for `num-server-rounds`. Expected an integer ≥ 1. Received: -1"),
        ("strategy", "fedfoo", "Invalid value for `strategy`. Expected one of 'fedavg', 'fedavgm', 'fedprox', 'fedadam', 'fedyogi', 'fedadagrad', 'fedmedian', 'fedtrimmedavg', 'krum', 'multikrum', 'bulyan', 'centeredclip'. Received: 'fedfoo'"),
        ("clip-radius", 0.0, "Invalid value for `clip-radius`. Expected a number > 0.0. Received: 0.0"),
        ("clip-iterations", 0, "Invalid value for `clip-iterations`. Expected an integer ≥ 1. Received: 0"),
        ("clip-iterations", 2.0, "Invalid value for `clip-iterations`. Expected an integer ≥ 1. Received: 2.0"),
        ("model", "vgg", "Invalid value for `model`. Expected one of 'cnn', 'cnn-small', 'resnet-gn'. Received: 'vgg'"),
        ("partitioner", "skew", "Invalid value for `partitioner`. Expected one of 'iid', 'dirichlet', 'quantity', 'feature-shift', 'natural'. Received: 'skew'"),
        ("partitioner", "natural", "Invalid value for `dataset`. Expected 'medmnist', 'folder' or 'dicom' (data with sites) when `partitioner` is 'natural'. Received: 'synthetic'"),
        ("partitioner", "feature-shift", "Invalid value for `shift-strength`. Expected a number > 0 when `partitioner` is 'feature-shift'. Received: 0.0"),
        ("dirichlet-alpha", 0.0, "Invalid value for `dirichlet-alpha`. Expected a number > 0.0. Received: 0.0"),
        ("shift-strength", -0.5, "Invalid value for `shift-strength`. Expected a number ≥ 0.0. Received: -0.5"),
        ("shift-strength", float("inf"), "Invalid value for `shift-strength`. Expected a number ≥ 0.0. Received: inf"),
        ("shift-strength", "1.0", "Invalid value for `shift-strength`. Expected a number ≥ 0.0. Received: '1.0'"),
        ("channels", 2, "Invalid value for `channels`. Expected one of 1, 3. Received: 2"),
        ("class-names", "normal", "Invalid value for `class-names`. Expected a string listing at least two comma-separated names. Received: 'normal'"),
        ("class-names", "normal,,pneumonia", "Invalid value for `class-names`. Expected comma-separated names, none of them empty. Received: 'normal,,pneumonia'"),
        ("class-names", " ,b", "Invalid value for `class-names`. Expected comma-separated names, none of them empty. Received: ' ,b'"),
        ("class-names", "normal,", "Invalid value for `class-names`. Expected comma-separated names, none of them empty. Received: 'normal,'"),
        ("class-names", "a,a", "Invalid value for `class-names`. Expected distinct class names ('a' is listed more than once). Received: 'a,a'"),
        ("class-names", "a,b, a", "Invalid value for `class-names`. Expected distinct class names ('a' is listed more than once). Received: 'a,b, a'"),
        ("class-names", ["a", "b"], "Invalid value for `class-names`. Expected a string. Received: ['a', 'b']"),
        ("image-size", 15, "Invalid value for `image-size`. Expected an integer ≥ 16 when `dataset` is 'synthetic'. Received: 15"),
        ("image-size", 4, "Invalid value for `image-size`. Expected an integer ≥ 8 and ≤ 1024. Received: 4"),
        ("dataset", "medmnist", "Invalid value for `data-path`. Expected a path to the data when `dataset` is 'medmnist'. Received: ''"),
        ("seed", -3, "Invalid value for `seed`. Expected an integer ≥ 0. Received: -3"),
        ("resume", "yes", "Invalid value for `resume`. Expected true or false. Received: 'yes'"),
        ("resume", True, "Invalid value for `run-dir`. Expected the directory of the run to continue when `resume` is true. Received: ''"),
        ("node-wait-timeout", 0.0, "Invalid value for `node-wait-timeout`. Expected a number > 0.0. Received: 0.0"),
        ("max-update-norm", -1.0, "Invalid value for `max-update-norm`. Expected a number ≥ 0.0. Received: -1.0"),
        ("checkpoints-keep", 0, "Invalid value for `checkpoints-keep`. Expected an integer ≥ 1. Received: 0"),
        ("early-stopping-patience", -1, "Invalid value for `early-stopping-patience`. Expected an integer ≥ 0. Received: -1"),
        ("val-fraction", 1.0, "Invalid value for `val-fraction`. Expected a number ≥ 0.0 and < 1.0. Received: 1.0"),
        ("val-fraction", -0.1, "Invalid value for `val-fraction`. Expected a number ≥ 0.0 and < 1.0. Received: -0.1"),
        ("central-eval-path", 3, "Invalid value for `central-eval-path`. Expected a string. Received: 3"),
        ("dp", "local", "Invalid value for `dp`. Expected one of 'off', 'record', 'hospital'. Received: 'local'"),
        ("dp-delta", 1.0, "Invalid value for `dp-delta`. Expected a number > 0.0 and < 1.0. Received: 1.0"),
        ("dp-clip-norm", 0.0, "Invalid value for `dp-clip-norm`. Expected a number > 0.0. Received: 0.0"),
        ("dp-noise-multiplier", -1.0, "Invalid value for `dp-noise-multiplier`. Expected a number ≥ 0.0. Received: -1.0"),
        ("max-epsilon", -1.0, "Invalid value for `max-epsilon`. Expected a number ≥ 0.0. Received: -1.0"),
        ("attack", "backdoor", "Invalid value for `attack`. Expected one of 'none', 'sign-flip', 'scaling', 'label-flip', 'gaussian', 'alie'. Received: 'backdoor'"),
        ("attack-fraction", 0.5, "Invalid value for `attack-fraction`. Expected a number ≥ 0.0 and < 0.5. Received: 0.5"),
        ("attack-fraction", -0.1, "Invalid value for `attack-fraction`. Expected a number ≥ 0.0 and < 0.5. Received: -0.1"),
        ("attack-scale", 0.0, "Invalid value for `attack-scale`. Expected a number > 0.0. Received: 0.0"),
        ("dropout-rate", 1.0, "Invalid value for `dropout-rate`. Expected a number ≥ 0.0 and < 1.0. Received: 1.0"),
        ("straggler-rate", -0.5, "Invalid value for `straggler-rate`. Expected a number ≥ 0.0 and < 1.0. Received: -0.5"),
        ("straggler-delay", -1.0, "Invalid value for `straggler-delay`. Expected a number ≥ 0.0. Received: -1.0"),
    ],
)  # fmt: skip
def test_invalid_value_names_key_expected_and_received(key: str, value: Any, message: str) -> None:
    values = {**run_config(), key: value}

    with pytest.raises(ConfigError) as caught:
        parse_app_config(values)

    assert str(caught.value) == message


def test_fedprox_needs_positive_mu() -> None:
    values = run_config(strategy="fedprox", proximal_mu=0.0)

    with pytest.raises(ConfigError) as caught:
        parse_app_config(values)

    assert str(caught.value) == (
        "Invalid value for `proximal-mu`. Expected a number > 0 when `strategy` is 'fedprox'. "
        "Received: 0.0"
    )


@pytest.mark.parametrize("key", ["seed", "local-epochs", "run-dir", "model"])
def test_missing_key_is_named(key: str) -> None:
    values = run_config()
    del values[key]

    with pytest.raises(ConfigError, match=f"Missing config key `{key}`"):
        parse_app_config(values)


def test_config_is_frozen() -> None:
    config = parse_app_config(run_config())

    with pytest.raises(ValueError, match="frozen"):
        config.federation.num_server_rounds = 9  # type: ignore[misc]


def test_train_config_from_message_values() -> None:
    values = {
        "local-epochs": 3,
        "batch-size": 16,
        "learning-rate": 0.01,
        "proximal-mu": 0.1,
        "local-steps": 40,
        "local-optimizer": "sgd",
        "local-momentum": 0.5,
        "augment": True,
        "augment-shift": 0.05,
        "augment-rotation": 5.0,
        "augment-intensity": 0.2,
        "augment-contrast": 0.3,
    }

    parsed = parse_train_config({**values, "server-round": 4})

    assert parsed.model_dump(by_alias=True) == values


def test_every_declared_key_is_read() -> None:
    """A key declared in pyproject but read by no model would be a dead setting."""
    from common.config import (
        AdversaryConfig,
        AppConfig,
        DataConfig,
        FederationConfig,
        PrivacySettings,
        TrainConfig,
    )

    read = {"model", "seed"} | {
        name.replace("_", "-")
        for section in (FederationConfig, TrainConfig, DataConfig, PrivacySettings, AdversaryConfig)
        for name in section.model_fields
    }
    declared = set(declared_defaults(project_root() / "pyproject.toml"))

    assert declared == read
    assert set(AppConfig.model_fields) == {
        "federation",
        "train",
        "data",
        "privacy",
        "adversary",
        "model",
        "seed",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dp": "record", "dp-epsilon": 0.0}, "Invalid value for `dp-epsilon`. Expected a number > 0 when `dp` is 'record' (the target ε of the whole run). Received: 0.0"),
        ({"dp": "hospital", "strategy": "fedadam"}, "Invalid value for `strategy`. Expected one of 'fedavg', 'fedprox' when `dp` is 'hospital' (Flower's accountant needs FedAvg's uniform aggregation). Received: 'fedadam'"),
        ({"dp": "hospital", "strategy": "krum"}, "Invalid value for `strategy`. Expected one of 'fedavg', 'fedprox' when `dp` is 'hospital' (Flower's accountant needs FedAvg's uniform aggregation). Received: 'krum'"),
    ],
)  # fmt: skip
def test_unsupported_dp_combinations_are_one_line(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_app_config({**run_config(), **overrides})

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"dataset": "folder", "data-path": "/data/x", "image-size": 8}, 8),
        ({"image-size": SYNTHETIC_MIN_IMAGE_SIZE}, SYNTHETIC_MIN_IMAGE_SIZE),
    ],
)
def test_small_images_are_accepted_where_they_work(
    overrides: dict[str, Any], expected: int
) -> None:
    config = parse_app_config({**run_config(), **overrides})

    assert config.data.image_size == expected


def test_synthetic_bound_is_what_the_generator_needs() -> None:
    # Prepare
    def spec(size: int) -> DataSpec:
        return DataSpec(class_names=("a", "b"), image_size=size, channels=1, min_examples=2)

    # Execute
    smallest = synthetic_site(0, 0, 4, spec(SYNTHETIC_MIN_IMAGE_SIZE))
    with pytest.raises(ConfigError) as caught:
        synthetic_site(0, 0, 4, spec(SYNTHETIC_MIN_IMAGE_SIZE - 1))

    # Assert
    assert smallest.train.images.shape[1:] == (
        SYNTHETIC_MIN_IMAGE_SIZE,
        SYNTHETIC_MIN_IMAGE_SIZE,
        1,
    )
    assert "image_size" in str(caught.value)


def test_class_names_are_stripped() -> None:
    config = parse_app_config({**run_config(), "class-names": " normal , pneumonia,covid "})

    assert config.data.spec().class_names == ("normal", "pneumonia", "covid")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"foo": 1}, "Unknown config key `foo`. Expected one of the keys declared in [tool.flwr.app.config] of pyproject.toml."),
        ({"local-epoch": 1}, "Unknown config key `local-epoch`. Expected one of the keys declared in [tool.flwr.app.config] of pyproject.toml. Did you mean `local-epochs`?"),
        ({"seed": 1, "zzz": 2, "aaa": 3}, "Unknown config key `aaa`. Expected one of the keys declared in [tool.flwr.app.config] of pyproject.toml."),
    ],
)  # fmt: skip
def test_unknown_override_is_a_config_error(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        with_overrides(run_config(), overrides)

    assert str(caught.value) == message


def test_overrides_replace_declared_values() -> None:
    defaults = run_config()

    merged = with_overrides(defaults, {"seed": 7, "strategy": "fedprox"})

    assert merged == {**defaults, "seed": 7, "strategy": "fedprox"}
    assert defaults == run_config()  # the defaults themselves are untouched

"""Run settings: parsed once, at an entry point, into frozen pydantic models.

The values and their defaults live in one place, ``[tool.flwr.app.config]`` in
``pyproject.toml``; Flower hands them to the apps as ``context.run_config``. The models
here declare types and bounds only, so a key missing from the run config is an error,
never a silently different default.
"""

from __future__ import annotations

import typing
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from common.data.partition import PartitionKind
from common.data.schema import DataSpec
from common.errors import invalid_value
from common.secagg_config import secure_run_problem, shares_problem, sum_fits_problem
from common.settings import Settings, section, validate

StrategyName = Literal[
    "fedavg",
    "fedavgm",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "centeredclip",
]
ModelName = Literal["cnn", "cnn-small", "resnet-gn"]
DPMode = Literal["off", "record", "hospital"]
LocalOptimizer = Literal["adam", "sgd"]
# Flower's accountant for hospital-level DP needs FedAvg's own (uniform) aggregation
# (flwr/serverapp/strategy/dp_fixed_clipping.py): these strategies use it unchanged.
HOSPITAL_DP_STRATEGIES: tuple[str, ...] = ("fedavg", "fedprox")
DatasetKind = Literal["synthetic", "medmnist", "folder", "dicom"]
AttackName = Literal["none", "sign-flip", "scaling", "label-flip", "gaussian", "alie"]
UPDATE_ATTACKS: tuple[str, ...] = ("sign-flip", "scaling", "gaussian", "alie")
# The smallest image the synthetic generator makes: common/data/synthetic.py refuses smaller
# ones on every hospital, so the config refuses them first (tests/test_config.py checks both agree).
SYNTHETIC_MIN_IMAGE_SIZE = 16


class FederationConfig(Settings):
    """How the coordinator runs rounds."""

    num_server_rounds: int = Field(ge=1)
    strategy: StrategyName
    fraction_train: float = Field(gt=0.0, le=1.0)
    fraction_evaluate: float = Field(ge=0.0, le=1.0)
    min_train_nodes: int = Field(ge=1)
    min_evaluate_nodes: int = Field(ge=0)
    min_available_nodes: int = Field(ge=1)
    round_timeout: float = Field(gt=0.0)
    server_learning_rate: float = Field(gt=0.0)
    server_momentum: float = Field(ge=0.0, lt=1.0)
    server_eta: float = Field(gt=0.0)
    server_tau: float = Field(gt=0.0)
    trim_beta: float = Field(ge=0.0, lt=0.5)
    clip_radius: float = Field(gt=0.0)
    clip_iterations: int = Field(ge=1)
    num_malicious_nodes: int = Field(ge=0)
    num_nodes_to_select: int = Field(ge=1)
    run_dir: str
    resume: bool
    node_wait_timeout: float = Field(gt=0.0)
    max_update_norm: float = Field(ge=0.0)
    central_eval_path: str
    checkpoints_keep: int = Field(ge=1)
    early_stopping_patience: int = Field(ge=0)
    site_registry: str
    secure_aggregation: bool
    secagg_num_shares: int | float
    secagg_reconstruction_threshold: int | float
    secagg_clipping_range: float = Field(gt=0.0, allow_inf_nan=False)
    secagg_quantization_range: int = Field(ge=2)

    @model_validator(mode="after")
    def _secagg_protocol(self) -> FederationConfig:
        on = self.secure_aggregation
        hospitals = max(self.min_available_nodes, self.min_train_nodes)
        problem = shares_problem(
            self.secagg_num_shares, self.secagg_reconstruction_threshold, on, self.min_train_nodes
        ) or sum_fits_problem(on, self.secagg_quantization_range, hospitals)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _site_registry_is_absolute(self) -> FederationConfig:
        if self.site_registry and not Path(self.site_registry).is_absolute():
            raise ValueError(
                invalid_value(
                    "site-registry",
                    'an absolute path to the PKI\'s sites.json, or "" (off)',
                    self.site_registry,
                )
            )
        return self

    @model_validator(mode="after")
    def _resume_needs_run_dir(self) -> FederationConfig:
        if self.resume and not self.run_dir:
            raise ValueError(
                invalid_value(
                    "run-dir", "the directory of the run to continue when `resume` is true", ""
                )
            )
        return self


class TrainConfig(Settings):
    """Local training, sent by the server to every hospital each round."""

    local_epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0.0)
    proximal_mu: float = Field(ge=0.0)
    local_steps: int = Field(ge=0)  # > 0: exactly this many optimizer steps a round
    local_optimizer: LocalOptimizer
    local_momentum: float = Field(ge=0.0, lt=1.0)  # sgd only
    augment: bool
    augment_shift: float = Field(ge=0.0, le=0.5)  # fraction of the image's width / height
    augment_rotation: float = Field(ge=0.0, le=180.0)  # degrees
    augment_intensity: float = Field(ge=0.0, le=1.0)  # additive brightness
    augment_contrast: float = Field(ge=0.0, lt=1.0)  # multiplicative, about the image mean


class PrivacySettings(Settings):
    """Differential privacy: which kind, its target and its mechanism.

    ``dp-noise-multiplier`` 0 means: calibrate it (:func:`common.privacy.calibrate_noise`)
    so that ``dp-epsilon`` is reached at the end of the run. ``max-epsilon`` is the budget
    of *simulated* hospitals (a deployed hospital sets its own in its node config).
    """

    dp: DPMode
    dp_epsilon: float = Field(ge=0.0)
    dp_delta: float = Field(gt=0.0, lt=1.0)
    dp_clip_norm: float = Field(gt=0.0)
    dp_noise_multiplier: float = Field(ge=0.0)
    max_epsilon: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _target_or_noise(self) -> PrivacySettings:
        if self.dp != "off" and self.dp_epsilon <= 0.0:
            raise ValueError(
                invalid_value(
                    "dp-epsilon",
                    f"a number > 0 when `dp` is {self.dp!r} (the target ε of the whole run)",
                    self.dp_epsilon,
                )
            )
        return self


class DataConfig(Settings):
    """The federation's data contract and how simulated hospitals get their data."""

    dataset: DatasetKind
    data_path: str
    class_names: str
    image_size: int = Field(ge=8, le=1024)
    channels: Literal[1, 3]
    min_examples: int = Field(ge=1)
    holdout_fraction: float = Field(gt=0.0, lt=1.0)
    val_fraction: float = Field(ge=0.0, lt=1.0)
    synthetic_examples: int = Field(ge=1)
    partitioner: PartitionKind
    dirichlet_alpha: float = Field(gt=0.0)
    shift_strength: float = Field(ge=0.0, allow_inf_nan=False)  # common/data/shift.py; 0 = off

    @model_validator(mode="after")
    def _data_path_for_files(self) -> DataConfig:
        if self.dataset != "synthetic" and not self.data_path:
            raise ValueError(
                invalid_value(
                    "data-path",
                    f"a path to the data when `dataset` is {self.dataset!r}",
                    self.data_path,
                )
            )
        return self

    @model_validator(mode="after")
    def _partitioner_needs(self) -> DataConfig:
        if self.partitioner == "natural" and self.dataset == "synthetic":
            expected = (
                "'medmnist', 'folder' or 'dicom' (data with sites) when `partitioner` is 'natural'"
            )
            raise ValueError(invalid_value("dataset", expected, self.dataset))
        if self.partitioner == "feature-shift" and self.shift_strength <= 0.0:
            expected = "a number > 0 when `partitioner` is 'feature-shift'"
            raise ValueError(invalid_value("shift-strength", expected, self.shift_strength))
        return self

    @model_validator(mode="after")
    def _class_names_distinct(self) -> DataConfig:
        names = self._names()
        expected = ""
        if len(names) < 2:
            expected = "a string listing at least two comma-separated names"
        elif "" in names:
            expected = "comma-separated names, none of them empty"
        elif repeated := [name for name, count in Counter(names).items() if count > 1]:
            expected = f"distinct class names ({repeated[0]!r} is listed more than once)"
        if expected:
            raise ValueError(invalid_value("class-names", expected, self.class_names))
        return self

    @model_validator(mode="after")
    def _synthetic_image_size(self) -> DataConfig:
        if self.dataset == "synthetic" and self.image_size < SYNTHETIC_MIN_IMAGE_SIZE:
            expected = f"an integer ≥ {SYNTHETIC_MIN_IMAGE_SIZE} when `dataset` is 'synthetic'"
            raise ValueError(invalid_value("image-size", expected, self.image_size))
        return self

    def _names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.class_names.split(","))

    def spec(self) -> DataSpec:
        return DataSpec(
            class_names=self._names(),
            image_size=self.image_size,
            channels=self.channels,
            min_examples=self.min_examples,
        )


class AdversaryConfig(Settings):
    """Simulated attackers and unreliable hospitals (simulations only: the code that acts on
    these lives in ``simulations/``; README "Adversarial and unreliable hospitals").

    ``attack-fraction`` < 0.5: the honest hospitals stay a majority (what every robust
    aggregator assumes, and what ALIE's z needs).
    """

    attack: AttackName
    attack_fraction: float = Field(ge=0.0, lt=0.5)
    attack_scale: float = Field(gt=0.0)
    dropout_rate: float = Field(ge=0.0, lt=1.0)
    straggler_rate: float = Field(ge=0.0, lt=1.0)
    straggler_delay: float = Field(ge=0.0)


class AppConfig(Settings):
    """Everything one run needs, parsed from ``context.run_config``."""

    federation: FederationConfig
    train: TrainConfig
    data: DataConfig
    privacy: PrivacySettings
    adversary: AdversaryConfig
    model: ModelName
    seed: int = Field(ge=0)

    @model_validator(mode="after")
    def _strategy_needs(self) -> AppConfig:
        if self.federation.strategy == "fedprox" and self.train.proximal_mu <= 0.0:
            raise ValueError(
                invalid_value(
                    "proximal-mu",
                    "a number > 0 when `strategy` is 'fedprox'",
                    self.train.proximal_mu,
                )
            )
        return self

    @model_validator(mode="after")
    def _hospital_dp_needs(self) -> AppConfig:
        if self.privacy.dp != "hospital":
            return self
        if self.federation.strategy not in HOSPITAL_DP_STRATEGIES:
            raise ValueError(
                invalid_value(
                    "strategy",
                    "one of "
                    + ", ".join(repr(name) for name in HOSPITAL_DP_STRATEGIES)
                    + " when `dp` is 'hospital' (Flower's accountant needs FedAvg's "
                    "uniform aggregation)",
                    self.federation.strategy,
                )
            )
        return self

    @model_validator(mode="after")
    def _secure_aggregation_needs(self) -> AppConfig:
        fed = self.federation
        problem = fed.secure_aggregation and secure_run_problem(
            fed.strategy,
            typing.get_args(StrategyName),
            fed.max_update_norm,
            self.adversary.attack,
            UPDATE_ATTACKS,
        )
        if problem:
            raise ValueError(problem)
        return self


def parse_app_config(run_config: dict[str, Any]) -> AppConfig:
    """Parse Flower's flat run config; raise :class:`ConfigError` with one clear line."""
    sections = {
        "federation": section(FederationConfig, run_config),
        "train": section(TrainConfig, run_config),
        "data": section(DataConfig, run_config),
        "privacy": section(PrivacySettings, run_config),
        "adversary": section(AdversaryConfig, run_config),
    }
    return validate(
        AppConfig,
        {**sections, "model": run_config.get("model"), "seed": run_config.get("seed")},
        required=("model", "seed"),
        source=run_config,
    )


def parse_train_config(values: dict[str, Any]) -> TrainConfig:
    """Parse the training settings a hospital receives in a message."""
    return validate(TrainConfig, section(TrainConfig, values), source=values)

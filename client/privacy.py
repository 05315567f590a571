"""The hospital's privacy gate: which DP it trains with, and whether its budget allows the round.

Before a round the hospital works out what the round would release — DP-SGD steps under
``dp = "record"``, an update without local noise otherwise — and what its cumulative ε
would then be (its ledger, :mod:`client.ledger`, plus this round). It refuses, training
nothing, when that exceeds the run's target ``dp-epsilon`` or its own ``max-epsilon``
(fail closed): the reply is the error kind "privacy budget exhausted". An update without
local noise counts as ε = ∞ for the hospital: hospital-level DP adds its noise at the
coordinator, which the hospital cannot check, so a hospital with a budget does not take
part in ``dp = "off"`` or ``"hospital"`` runs.

The budget is the hospital's own: a deployed hospital's ``max-epsilon`` and
``privacy-ledger`` come from its SuperNode's ``--node-config`` only, never from the run
config or a message; simulated hospitals (experiments) all get the run's ``max-epsilon``.
"""

from __future__ import annotations

import fcntl
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ConfigRecord, RecordDict, UserConfig
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from client.dp_sgd import RecordDP
from client.ledger import (
    FileStore,
    LedgerEntry,
    LedgerStore,
    StateStore,
    data_fingerprint,
    entry_of,
    with_entry,
)
from common.config import AppConfig, TrainConfig
from common.data.schema import Split
from common.errors import ConfigError, FedclinicError, invalid_value
from common.privacy import check_record_level, local_steps, record_event, sample_size
from common.settings import kebab_keys

MAX_EPSILON = "max-epsilon"
PRIVACY_LEDGER = "privacy-ledger"
LEDGER_SUFFIX = ".privacy-ledger.json"
SIMULATED_LEDGERS = "privacy-ledgers"
SERVER_ROUND = "server-round"

Calibrate = Callable[[float, float, int, float | None], float]


class BudgetExhaustedError(FedclinicError):
    """This round would take the hospital's ε over its budget: it does not train."""

    public_reason = "privacy budget exhausted"


@dataclass(frozen=True)
class HospitalBudget:
    """The hospital's own limit (None: none) and where its ledger lives."""

    max_epsilon: float | None
    store: LedgerStore
    lock_path: Path | None = None


@dataclass(frozen=True)
class RoundPlan:
    """What this round releases: DP-SGD (``dp`` set) or an update without local noise.

    ``batch_size`` is the expected Poisson sample under DP (:func:`sample_size`)."""

    dp: RecordDP | None
    batch_size: int
    delta: float
    target_epsilon: float | None  # the run's dp-epsilon under record-level DP


def check_train_request(request: ConfigRecord, config: AppConfig) -> None:
    """Accept only the settings a train request may carry: the training settings, the
    round and, under hospital-level DP, the run's own clipping norm (for Flower's
    ``fixedclipping_mod``). Anything else — a budget, a noise level, a DP switch — is
    refused in one line: no setting reaches the hospital that it did not accept."""
    accepted = [*kebab_keys(TrainConfig), SERVER_ROUND]
    if config.privacy.dp == "hospital":
        accepted.append(KEY_CLIPPING_NORM)
    unexpected = sorted(set(request) - set(accepted))
    if unexpected:
        raise ConfigError(
            f"Unexpected setting `{unexpected[0]}` in the train request. Expected only "
            + ", ".join(f"`{key}`" for key in accepted)
            + "."
        )
    if config.privacy.dp == "hospital" and request.get(KEY_CLIPPING_NORM) != (
        config.privacy.dp_clip_norm
    ):
        raise ConfigError(
            invalid_value(
                KEY_CLIPPING_NORM,
                f"the run's `dp-clip-norm` ({config.privacy.dp_clip_norm:g})",
                request.get(KEY_CLIPPING_NORM),
            )
        )


def node_max_epsilon(node_config: UserConfig) -> float | None:
    if MAX_EPSILON not in node_config:
        return None
    value = node_config[MAX_EPSILON]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(
            invalid_value(MAX_EPSILON, "a number > 0 in the SuperNode's `--node-config`", value)
        )
    return float(value)


def hospital_budget(
    node_config: UserConfig, config: AppConfig, state: RecordDict, site_name: str
) -> HospitalBudget:
    """The budget of this node: from its node config if deployed, the run's if simulated."""
    if "data-path" in node_config:
        data_path = Path(str(node_config["data-path"])).expanduser()
        ledger = node_config.get(PRIVACY_LEDGER)
        path = (
            Path(str(ledger)).expanduser()
            if ledger
            else data_path.with_name(data_path.name + LEDGER_SUFFIX)
        )
        return HospitalBudget(node_max_epsilon(node_config), FileStore(path), path)
    max_epsilon = config.privacy.max_epsilon or None
    run_dir = config.federation.run_dir
    if run_dir:
        path = Path(run_dir).expanduser() / SIMULATED_LEDGERS / f"{site_name}.json"
        return HospitalBudget(max_epsilon, FileStore(path), path)
    return HospitalBudget(max_epsilon, StateStore(state))


def plan_round(
    config: AppConfig, train: TrainConfig, num_examples: int, calibrate: Calibrate
) -> RoundPlan:
    """The mechanism of this round; under ``record`` the noise is calibrated (cached by
    ``calibrate``) for a hospital of ``num_examples`` training every round. A round is
    ``local-steps`` DP-SGD steps when that is > 0, else :func:`local_steps` of the epochs."""
    privacy = config.privacy
    if privacy.dp != "record":
        return RoundPlan(
            dp=None, batch_size=train.batch_size, delta=privacy.dp_delta, target_epsilon=None
        )
    check_record_level(num_examples, privacy.dp_delta)
    batch = sample_size(num_examples, train.batch_size)
    steps = train.local_steps or local_steps(num_examples, batch, train.local_epochs)
    noise = privacy.dp_noise_multiplier or calibrate(
        privacy.dp_epsilon,
        privacy.dp_delta,
        steps * config.federation.num_server_rounds,
        batch / num_examples,
    )
    return RoundPlan(
        dp=RecordDP(clip_norm=privacy.dp_clip_norm, noise_multiplier=noise, steps=steps),
        batch_size=batch,
        delta=privacy.dp_delta,
        target_epsilon=privacy.dp_epsilon,
    )


class PrivacyGate:
    """Admit a round against the ledger, then record what it released."""

    def __init__(self, budget: HospitalBudget, data: Split) -> None:
        self.budget = budget
        self.fingerprint = data_fingerprint(data)
        self.population = len(data)

    def _entry(self) -> tuple[dict[str, object], LedgerEntry]:
        document = self.budget.store.load()
        return document, entry_of(document, self.fingerprint, self.population)

    def projected(self, plan: RoundPlan) -> float:
        """The hospital's ε at the run's δ if this round is released."""
        _, entry = self._entry()
        if plan.dp is None:
            return math.inf
        event = record_event(plan.dp.noise_multiplier, plan.batch_size, self.population)
        return entry.epsilon(plan.delta, (event, plan.dp.steps))

    def admit(self, plan: RoundPlan) -> None:
        """Raise :class:`BudgetExhaustedError` when the round would exceed a limit."""
        limits = [
            (limit, name)
            for limit, name in (
                (plan.target_epsilon, "the run's `dp-epsilon`"),
                (self.budget.max_epsilon, f"the hospital's `{MAX_EPSILON}`"),
            )
            if limit is not None
        ]
        if not limits:
            return
        after = self.projected(plan)
        for limit, name in limits:
            if after > limit:
                raise BudgetExhaustedError(
                    f"Privacy budget exhausted: this round would raise ε to {after:.4g} "
                    f"(δ = {plan.delta:g}) > {name} {limit:g}; not training."
                )

    def record(self, plan: RoundPlan) -> float:
        """Add the round to the ledger (saved before any reply leaves); the new ε."""
        document, entry = self._entry()
        if plan.dp is None:
            entry.non_private_releases += 1
        else:
            event = record_event(plan.dp.noise_multiplier, plan.batch_size, self.population)
            entry.add(event, plan.dp.steps)
        self.budget.store.save(with_entry(dict(document), self.fingerprint, entry))
        return entry.epsilon(plan.delta)


@contextmanager
def ledger_lock(budget: HospitalBudget) -> Iterator[None]:
    """Serialise rounds that share a ledger file (two runs at one hospital)."""
    if budget.lock_path is None:
        yield
        return
    lock = budget.lock_path.with_name(budget.lock_path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

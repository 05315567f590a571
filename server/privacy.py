"""Hospital-level differential privacy at the coordinator, and ε in each round's record.

``dp = "hospital"`` protects a hospital's participation: each hospital clips its model
update to ``dp-clip-norm`` (Flower's ``fixedclipping_mod``, on the hospital's side) and
Flower's :class:`DifferentialPrivacyClientSideFixedClipping` adds Gaussian noise of std
``noise-multiplier · clip-norm / n`` to the uniform mean of the ``n`` clipped updates.
Flower's accountant (:func:`common.privacy.hospital_accountant`, one Gaussian release per
round, no amplification by sampling) composes every round and refuses, before a round
is sent, one that would take ε above ``dp-epsilon``. Each round trains exactly
``min-train-nodes`` hospitals (:func:`server.strategies.build_strategy`) and aggregates
only when all of them sent a valid update, each clipped (``ValidatingStrategy`` rejects an
update whose norm exceeds ``dp-clip-norm``). This is central DP: the coordinator sees each
hospital's update and metrics; the guarantee covers the models it releases.

The accountant's population is ``min-available-nodes``: the federation the run was
configured for. With no amplification it only bounds the sample (``min-train-nodes`` ≤
``min-available-nodes``); ε does not depend on it.

The chain a coordinator runs is ``ValidatingStrategy`` → :class:`UniformWeights` →
``DifferentialPrivacyClientSideFixedClipping`` → ``FedAvg`` / ``FedProx``.
:class:`UniformWeights` exists because the noise is calibrated to the *uniform* mean
(one hospital moves it by at most ``clip-norm / n``), so Flower's accounted mode insists
on equal weights; hospitals report their real ``num-examples``, so the adapter hands
Flower copies of the replies weighted 1 each, and reports training metrics weighted by
the real ``num-examples`` (the replies the loop records are never changed).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    FedAvg,
    Strategy,
)
from flwr.serverapp.strategy.dp_fixed_clipping import DifferentialPrivacyFixedClippingBase
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from common.config import AppConfig
from common.contract import EPSILON_KEY, METRICS_KEY, WEIGHT_KEY
from common.errors import ConfigError, RunError, invalid_value
from common.privacy import epsilon_after, hospital_accountant, quiet_absl
from server.checkpoint import checkpoint_remains, innermost
from server.dp_settings import hospital_noise_multiplier


class BudgetExhaustedError(RunError, PrivacyBudgetExhausted):
    """The next round would exceed ``dp-epsilon``: one line, and Flower's exit code."""


def with_hospital_dp(strategy: Strategy, config: AppConfig) -> UniformWeights:
    """``strategy`` under Flower's client-side fixed-clipping wrapper with an accountant.

    Flower's refusals (a ValueError) become one ConfigError line, before round 1.
    """
    fed, privacy = config.federation, config.privacy
    if fed.min_train_nodes > fed.min_available_nodes:
        raise ConfigError(
            invalid_value(
                "min-train-nodes",
                f"at most `min-available-nodes` ({fed.min_available_nodes}) when `dp` is "
                "'hospital' (each round samples exactly `min-train-nodes` hospitals from them)",
                fed.min_train_nodes,
            )
        )
    noise = hospital_noise_multiplier(config)
    try:
        wrapped = DifferentialPrivacyClientSideFixedClipping(
            strategy,
            noise_multiplier=noise,
            clipping_norm=privacy.dp_clip_norm,
            num_sampled_clients=fed.min_train_nodes,
            accountant=hospital_accountant(
                fed.min_available_nodes, privacy.dp_delta, max_epsilon=privacy.dp_epsilon
            ),
        )
    except ValueError as err:
        raise ConfigError(
            f"Cannot use hospital-level DP (`dp`='hospital') with these settings: {err}"
        ) from err
    return UniformWeights(wrapped)


def uniform_copy(reply: Message) -> Message:
    """A copy of a valid train reply whose ``num-examples`` is 1 (the reply is unchanged)."""
    metrics = MetricRecord(dict(reply.content.metric_records[METRICS_KEY]))
    metrics[WEIGHT_KEY] = 1
    content = RecordDict({**reply.content, METRICS_KEY: metrics})
    uniform = copy.copy(reply)  # same metadata; the content is replaced on the copy only
    uniform.content = content
    return uniform


class UniformWeights(Strategy):
    """Between our validation and Flower's DP wrapper: equal weights, clear budget errors."""

    def __init__(self, strategy: DifferentialPrivacyFixedClippingBase) -> None:
        super().__init__()
        self.strategy = strategy

    def __repr__(self) -> str:
        return f"UniformWeights({self.strategy!r})"

    def summary(self) -> None:
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        try:
            return self.strategy.configure_train(server_round, arrays, config, grid)
        except PrivacyBudgetExhausted as err:
            raise BudgetExhaustedError(self._exhausted(server_round)) from err

    def _exhausted(self, server_round: int) -> str:
        dp, accountant = self.strategy, accountant_of(self)
        if accountant is None:  # only an accounted wrapper raises PrivacyBudgetExhausted
            return f"Privacy budget exhausted before round {server_round}."
        limit = accountant.config
        event = GaussianPrivacyEvent(
            noise_multiplier=dp.noise_multiplier,
            sample_size=dp.num_sampled_clients,
            population_size=limit.population_size,
        )
        return (
            f"Privacy budget exhausted: round {server_round} would raise ε to "
            f"{epsilon_after(accountant, event, 1):.3g} > `dp-epsilon` {limit.max_epsilon:g} "
            f"(δ={limit.target_delta:g}). {checkpoint_remains(server_round)}"
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        originals = list(replies)
        copies = [reply if reply.has_error() else uniform_copy(reply) for reply in originals]
        arrays, metrics = self.strategy.aggregate_train(server_round, copies)
        inner = innermost(self)
        valid = [reply.content for reply in originals if not reply.has_error()]
        if arrays is not None and valid and isinstance(inner, FedAvg):
            metrics = inner.train_metrics_aggr_fn(valid, inner.weighted_by_key)
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)


def dp_wrapper(strategy: Strategy) -> DifferentialPrivacyFixedClippingBase | None:
    """Flower's DP wrapper anywhere in the chain of wrappers (None without one)."""
    current: Any = strategy
    while isinstance(current, Strategy):
        if isinstance(current, DifferentialPrivacyFixedClippingBase):
            return current
        current = getattr(current, "strategy", None)
    return None


def accountant_of(strategy: Strategy) -> RdpAccountant | None:
    wrapper = dp_wrapper(strategy)
    accountant = None if wrapper is None else wrapper.accountant
    return accountant if isinstance(accountant, RdpAccountant) else None


def privacy_state(strategy: Strategy) -> dict[str, Any] | None:
    """The accountant's JSON state, for the checkpoint (None without an accountant)."""
    accountant = accountant_of(strategy)
    return None if accountant is None else dict(accountant.state_dict())


def restore_privacy_state(strategy: Strategy, state: dict[str, Any] | None, source: str) -> None:
    """Continue the accountant of the run ``source`` checkpointed; refuse in one line."""
    accountant = accountant_of(strategy)
    if accountant is None:
        return
    if state is None:
        raise RunError(
            f"Cannot resume from {source}: it holds no privacy accountant, so the ε this "
            "run already spent would be forgotten."
        )
    try:
        accountant.load_state_dict(state)
    except (ValueError, TypeError, KeyError) as err:
        raise RunError(
            f"Cannot resume from {source}: its privacy accountant does not fit this run ({err})"
        ) from err


def round_privacy(
    strategy: Strategy, config: AppConfig, train_nodes: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The round record's ``privacy``: mode, δ and ε after this round (None when dp is off).

    Hospital level: the accountant's cumulative ε. Record level: the largest cumulative ε
    any hospital that trained this round reported (each one's own is in its node record).
    """
    mode = config.privacy.dp
    if mode == "off":
        return None
    record: dict[str, Any] = {"mode": mode, "delta": config.privacy.dp_delta}
    if mode == "hospital":
        wrapper = dp_wrapper(strategy)
        accountant = accountant_of(strategy)
        if wrapper is None or accountant is None:
            raise RunError("Hospital-level DP is on but the strategy has no privacy accountant.")
        with quiet_absl():
            record["epsilon"] = accountant.get_privacy_spent().epsilon
        record["noise_multiplier"] = wrapper.noise_multiplier
        return record
    reported = [
        value
        for outcome in train_nodes.values()
        if outcome.get("status") == "ok"
        and isinstance(value := (outcome.get("metrics") or {}).get(EPSILON_KEY), int | float)
    ]
    record["epsilon"] = max(reported) if reported else None
    return record

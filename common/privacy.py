"""Privacy accounting both sides share: events, calibration and accountants.

No RDP math is written here: accounting is Flower's :class:`RdpAccountant` (a wrapper of
Google's ``dp-accounting``, installed by the ``flwr[dp]`` extra) and calibration is
``dp_accounting.calibrate_dp_mechanism`` on the same RDP accountant, so a calibrated
noise multiplier is judged by the very accountant that later reports ε.

Record-level DP (``dp = "record"``): one local DP-SGD step is a Poisson-sampled Gaussian
mechanism with rate ``q = batch-size / N_h`` over the hospital's ``N_h`` training
examples; a round is :func:`local_steps` such steps. Hospital-level DP
(``dp = "hospital"``): one round is one Gaussian release of the clipped, averaged
updates, without amplification by sampling (what Flower's accountant supports).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from common.contract import EPSILON_KEY
from common.errors import ConfigError, invalid_value

__all__ = ["EPSILON_KEY"]
CALIBRATION_TOLERANCE = 1e-4
MIN_NOISE_MULTIPLIER = 1e-2
MAX_NOISE_MULTIPLIER = 1e4


@contextmanager
def quiet_absl() -> Iterator[None]:
    """Hide dp-accounting's per-order convergence warnings (it drops those orders itself)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def sample_size(num_examples: int, batch_size: int) -> int:
    """The expected Poisson sample of a DP-SGD step: ``batch-size``, or every example
    (rate 1) at a hospital with fewer."""
    return min(batch_size, num_examples)


def local_steps(num_examples: int, batch_size: int, local_epochs: int) -> int:
    """DP-SGD steps in one round: the expected batches of an epoch, times the epochs."""
    return max(1, math.ceil(num_examples / batch_size)) * local_epochs


def check_record_level(num_examples: int, delta: float) -> None:
    """A hospital refuses a δ its data cannot honour (one ConfigError line)."""
    if delta >= 1.0 / num_examples:
        raise ConfigError(
            invalid_value(
                "dp-delta",
                f"a number < 1/{num_examples} = {1.0 / num_examples:.3g} at this hospital "
                "(δ ≥ 1/N allows publishing a patient's record outright)",
                delta,
            )
        )


def record_event(
    noise_multiplier: float, batch_size: int, num_examples: int
) -> GaussianPrivacyEvent:
    """One DP-SGD step: Gaussian noise on a Poisson sample of rate batch/N."""
    return GaussianPrivacyEvent(
        noise_multiplier=noise_multiplier, sample_size=batch_size, population_size=num_examples
    )


def record_accountant(num_examples: int, delta: float) -> RdpAccountant:
    """A hospital's accountant for record-level DP (add/remove one patient)."""
    return RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=num_examples,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.POISSON,
        )
    )


def hospital_accountant(num_hospitals: int, delta: float, max_epsilon: float) -> RdpAccountant:
    """The coordinator's accountant for hospital-level DP (Flower's wrappers use it)."""
    return RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=num_hospitals,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
            max_epsilon=max_epsilon,
        )
    )


def calibrate_noise(
    target_epsilon: float, delta: float, releases: int, sampling_rate: float | None
) -> float:
    """The smallest noise multiplier (within tolerance) whose ``releases`` Gaussian
    releases — each on a Poisson sample of ``sampling_rate``, or on everyone when None —
    stay at or below ``target_epsilon`` at ``delta``.

    Uses ``dp-accounting``'s RDP accountant with its default orders, the same one Flower's
    :class:`RdpAccountant` builds.
    """
    from dp_accounting import dp_event, mechanism_calibration, rdp

    def make_event(noise_multiplier: float) -> Any:
        gaussian = dp_event.GaussianDpEvent(noise_multiplier)
        step = (
            gaussian
            if sampling_rate is None
            else dp_event.PoissonSampledDpEvent(sampling_rate, gaussian)
        )
        return dp_event.SelfComposedDpEvent(step, releases)

    def epsilon(noise_multiplier: float) -> float:
        accountant = rdp.RdpAccountant()
        accountant.compose(make_event(noise_multiplier))
        return float(accountant.get_epsilon(delta))

    with quiet_absl():
        if epsilon(MAX_NOISE_MULTIPLIER) > target_epsilon:
            raise ConfigError(
                invalid_value(
                    "dp-epsilon",
                    f"a target reachable with a noise multiplier ≤ {MAX_NOISE_MULTIPLIER:g} "
                    f"over {releases} releases at δ = {delta:g}",
                    target_epsilon,
                )
            )
        if epsilon(MIN_NOISE_MULTIPLIER) <= target_epsilon:
            return MIN_NOISE_MULTIPLIER
        return float(
            mechanism_calibration.calibrate_dp_mechanism(
                rdp.RdpAccountant,
                make_event,
                target_epsilon,
                delta,
                mechanism_calibration.ExplicitBracketInterval(
                    MIN_NOISE_MULTIPLIER, MAX_NOISE_MULTIPLIER
                ),
                tol=CALIBRATION_TOLERANCE,
            )
        )


def epsilon_after(accountant: RdpAccountant, event: GaussianPrivacyEvent, count: int) -> float:
    """ε at the accountant's δ if ``count`` more ``event`` s were composed (no change made)."""
    projected = RdpAccountant(accountant.config)
    with quiet_absl():
        projected.load_state_dict(accountant.state_dict())
        projected.compose(event, count)
        return projected.get_epsilon(accountant.config.target_delta)

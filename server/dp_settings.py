"""The DP settings a run actually uses (noise multiplier resolved): wrappers, checkpoints."""

from __future__ import annotations

from typing import Any

from common.config import AppConfig
from common.privacy import calibrate_noise


def hospital_noise_multiplier(config: AppConfig) -> float:
    """``dp-noise-multiplier``, or when 0 the one calibrated with ``dp-accounting`` so that
    ``num-server-rounds`` releases end at or below ``dp-epsilon`` (hospital-level DP)."""
    privacy = config.privacy
    if privacy.dp_noise_multiplier > 0.0:
        return privacy.dp_noise_multiplier
    return calibrate_noise(
        privacy.dp_epsilon,
        privacy.dp_delta,
        releases=config.federation.num_server_rounds,
        sampling_rate=None,
    )


def privacy_fit(config: AppConfig) -> dict[str, Any]:
    """The DP settings a checkpoint must share with the run that resumes it.

    Always ``dp``; for hospital-level DP also the target, δ, clip norm and the noise
    multiplier used (resolved: a calibrated one depends on ``num-server-rounds``), since
    the checkpointed accountant composed releases of exactly that mechanism.
    """
    privacy = config.privacy
    fit: dict[str, Any] = {"dp": privacy.dp}
    if privacy.dp == "hospital":
        fit |= {
            "dp-epsilon": privacy.dp_epsilon,
            "dp-delta": privacy.dp_delta,
            "dp-clip-norm": privacy.dp_clip_norm,
            "dp-noise-multiplier": hospital_noise_multiplier(config),
        }
    return fit

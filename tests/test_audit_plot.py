"""simulations.audit.roc_plot: the ROC PNG, written atomically, with and without the DP bound."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from simulations.audit.mia_math import AuditError, roc_curve
from simulations.audit.roc_plot import plot_roc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def curves() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two ROC curves, one with members found at FPR 0 (a zero FPR on log axes)."""
    rng = np.random.default_rng(0)
    is_member = np.arange(400) < 100
    leaky = rng.normal(size=400) + 2.0 * is_member
    leaky[:10] = 9.0
    blind = rng.normal(size=400)
    return {
        "LiRA (AUC 0.9)": roc_curve(leaky, is_member),
        "loss (AUC 0.5)": roc_curve(blind, is_member),
    }


def test_plot_roc_writes_pngs_with_and_without_the_bound_and_no_temporary_file(
    tmp_path: Path,
) -> None:
    plain_target = tmp_path / "plain" / "plots" / "audit-roc.png"
    bounded_target = tmp_path / "bounded" / "plots" / "audit-roc.png"

    plain = plot_roc(curves(), plain_target, title="global model")
    bounded = plot_roc(curves(), bounded_target, bound=(1.0, 1e-5), title="global model")

    assert (plain, bounded) == (plain_target, bounded_target)
    for target in (plain, bounded):
        assert target.read_bytes()[:8] == PNG_SIGNATURE
        assert [p.name for p in target.parent.iterdir()] == ["audit-roc.png"]
    assert plain.read_bytes() != bounded.read_bytes()  # the bound curve is drawn


def test_plot_roc_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "audit-roc.png"
    target.write_bytes(b"old")

    plot_roc(curves(), target)

    assert target.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "Invalid value for `curves`. Expected at least one (fpr, tpr) curve. Received: {}"),
        (
            {"loss": (np.zeros(3), np.zeros(2))},
            "Invalid value for `curves['loss']`. "
            "Expected equal 1-D shapes. Received: 'fpr (3,), tpr (2,)'",
        ),
    ],
)
def test_plot_roc_rejects_bad_curves(
    tmp_path: Path, given: dict[str, tuple[np.ndarray, np.ndarray]], message: str
) -> None:
    target = tmp_path / "audit-roc.png"

    with pytest.raises(AuditError, match=f"^{re.escape(message)}$"):
        plot_roc(given, target)
    assert not target.exists()

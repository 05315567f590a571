"""The audit's ROC plot: log-log axes, so the low-FPR region where LiRA finds members shows,
with the chance diagonal and, for a DP run, the bound e^ε·FPR + δ no attack may exceed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import invalid_value
from common.files import write_atomic
from simulations.audit.mia_math import AuditError, dp_bound


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _checked(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[Any, Any]]:
    if not curves:
        raise AuditError(invalid_value("curves", "at least one (fpr, tpr) curve", {}))
    checked = {}
    for label, (fpr, tpr) in curves.items():
        x, y = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0:
            shapes = f"fpr {x.shape}, tpr {y.shape}"
            raise AuditError(invalid_value(f"curves[{label!r}]", "equal 1-D shapes", shapes))
        checked[label] = (x, y)
    return checked


def _floor(arrays: list[np.ndarray]) -> float:
    """Half the smallest positive rate: 1/(2·count) when one example resolves it."""
    positive = [float(a[a > 0].min()) for a in arrays if np.any(a > 0)]
    return min(positive) / 2.0 if positive else 1e-3


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    target: Path,
    *,
    bound: tuple[float, float] | None = None,
    title: str = "",
) -> Path:
    """Draw each labelled (fpr, tpr) curve on log-log axes and write the PNG ``target``.

    Rates of 0 are drawn at the axis floor (half the smallest positive rate), so a curve that
    finds members at FPR 0 still shows. ``bound = (ε, δ)`` adds the DP bound curve.
    """
    checked = _checked(curves)
    x_floor = _floor([x for x, _ in checked.values()])
    y_floor = _floor([y for _, y in checked.values()])
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(5.5, 5))
    for label, (x, y) in checked.items():
        axis.plot(np.maximum(x, x_floor), np.maximum(y, y_floor), label=label)
    grid = np.logspace(math.log10(x_floor), 0.0, 200)
    axis.plot(grid, grid, ":", color="grey", label="chance")
    if bound is not None:
        epsilon, delta = bound
        axis.plot(
            grid,
            np.asarray(dp_bound(grid, epsilon, delta)),
            "--",
            color="black",
            label=f"DP bound e^ε·FPR + δ (ε={epsilon:g}, δ={delta:g})",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlim(x_floor, 1.0)
    axis.set_ylim(min(x_floor, y_floor), 1.05)
    axis.set_xlabel("false positive rate (non-members called members)")
    axis.set_ylabel("true positive rate (members found)")
    axis.set_title(title or "membership inference ROC")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    write_atomic(target, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return target

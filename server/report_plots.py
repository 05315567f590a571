"""The report's PNG plots, drawn with matplotlib's Agg backend from ``metrics.json`` rounds.

Hospitals are labelled by the names they reported (:func:`server.records.names_of`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from common.files import write_atomic
from server.records import PHASES, STATUSES, names_of, natural_key, participation

GLOBAL_METRICS = ("loss", "accuracy", "auc")
HOSPITAL_METRICS = (("evaluate", "accuracy"), ("evaluate", "auc"), ("train", "loss"))
STATUS_COLOURS = tuple(zip(STATUSES, ("#2a9d8f", "#e76f51", "#f4a261", "#6d597a"), strict=True))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _save(fig: Any, target: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    write_atomic(target, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return target


def _round_axis(axis: Any) -> None:
    axis.set_xlabel("round")
    axis.xaxis.set_major_locator(_integer_ticks())
    axis.grid(alpha=0.3)


def hospitals_by_name(
    rounds: list[dict[str, Any]], phases: tuple[str, ...]
) -> list[tuple[str, str]]:
    """(node id, name) of every node in ``phases`` of any round, in name order."""
    names = names_of(rounds)
    nodes = {node for r in rounds for phase in phases for node in r["nodes"][phase]}
    return sorted(((node, names[node]) for node in nodes), key=lambda pair: natural_key(pair[1]))


def _value(metrics: dict[str, Any] | None, key: str) -> float:
    value = (metrics or {}).get(key)
    return float(value) if isinstance(value, int | float) else math.nan


def plot_global(rounds: list[dict[str, Any]], target: Path) -> Path:
    """Loss, accuracy and AUC of the global model per round: hospitals' and central."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(GLOBAL_METRICS), figsize=(12, 3.5))
    numbers = [r["round"] for r in rounds]
    for axis, key in zip(axes, GLOBAL_METRICS, strict=True):
        axis.plot(
            numbers, [_value(r.get("evaluate"), key) for r in rounds], "o-", label="hospitals"
        )
        if any("central" in r for r in rounds):
            central = [_value(r.get("central"), key) for r in rounds]
            axis.plot(numbers, central, "s--", label="central set")
        axis.set_title(f"global model: {key}")
        _round_axis(axis)
        axis.legend()
    return _save(fig, target)


def plot_hospitals(rounds: list[dict[str, Any]], target: Path) -> Path:
    """Each hospital's own metrics per round (evaluate accuracy / AUC, training loss)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(HOSPITAL_METRICS), figsize=(12, 3.5))
    nodes = hospitals_by_name(rounds, PHASES)
    for axis, (phase, key) in zip(axes, HOSPITAL_METRICS, strict=True):
        for node, name in nodes:
            values = [_value(r["nodes"][phase].get(node, {}).get("metrics"), key) for r in rounds]
            axis.plot([r["round"] for r in rounds], values, "o-", label=name)
        axis.set_title(f"{phase} {key} per hospital")
        _round_axis(axis)
    if nodes:
        axes[-1].legend(fontsize="small")
    return _save(fig, target)


def plot_participation(rounds: list[dict[str, Any]], target: Path) -> Path:
    """Who trained each round: counts per status, and every hospital's status per round."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    fig, (counts_axis, grid_axis) = plt.subplots(1, 2, figsize=(12, 3.8))
    numbers = [r["round"] for r in rounds]
    bottom = [0] * len(rounds)
    for status, colour in STATUS_COLOURS:
        counts = [participation(r["nodes"]["train"])[status] for r in rounds]
        counts_axis.bar(numbers, counts, bottom=bottom, color=colour, label=status)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    counts_axis.set_title("training participation per round")
    _round_axis(counts_axis)
    counts_axis.yaxis.set_major_locator(_integer_ticks())
    counts_axis.set_ylabel("hospitals")
    counts_axis.legend(fontsize="small")

    nodes = [node for node, _ in hospitals_by_name(rounds, ("train",))]
    names = names_of(rounds)
    codes = {status: index for index, (status, _) in enumerate(STATUS_COLOURS)}
    not_sampled = len(STATUS_COLOURS)
    cells = [
        [codes[r["nodes"]["train"][node]["status"]] if node in r["nodes"]["train"] else not_sampled
         for r in rounds]
        for node in nodes
    ]  # fmt: skip
    palette = ListedColormap([colour for _, colour in STATUS_COLOURS] + ["#eeeeee"])
    grid_axis.imshow(cells, cmap=palette, vmin=0, vmax=not_sampled, aspect="auto")
    grid_axis.set_xticks(range(len(rounds)), [str(n) for n in numbers])
    grid_axis.set_yticks(range(len(nodes)), [names[node] for node in nodes], fontsize="small")
    grid_axis.set_xlabel("round")
    grid_axis.set_title("each hospital's training status (grey: not sampled)")
    return _save(fig, target)


def plot_confusion(matrix: list[list[int]], class_names: list[str], target: Path) -> Path:
    """The final global model's confusion matrix on the central set."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(4.5, 4))
    image = axis.imshow(matrix, cmap="Blues")
    ticks = range(len(matrix))
    labels = [class_names[k] if k < len(class_names) else str(k) for k in ticks]
    axis.set_xticks(ticks, labels, rotation=30)
    axis.set_yticks(ticks, labels)
    dark = max(max(values) for values in matrix) / 2
    for row, values in enumerate(matrix):
        for col, count in enumerate(values):
            colour = "white" if count > dark else "black"
            axis.text(col, row, str(count), ha="center", va="center", color=colour)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("central set: confusion matrix")
    fig.colorbar(image, ax=axis)
    return _save(fig, target)


def plot_privacy(
    series: dict[str, list[float | None]],
    numbers: list[int],
    target: float | None,
    target_label: str,
    target_path: Path,
) -> Path:
    """Cumulative ε per round: one line per ``series`` entry, the target dashed."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(7, 3.8))
    for label, values in series.items():
        points = [math.nan if value is None else value for value in values]
        axis.plot(numbers, points, "o-", label=label)
    if target is not None:
        axis.axhline(target, color="#e76f51", linestyle="--", label=target_label)
    axis.set_title("cumulative privacy loss ε per round")
    axis.set_ylabel("ε")
    _round_axis(axis)
    axis.set_ylim(bottom=0)
    if series or target is not None:
        axis.legend(fontsize="small")
    return _save(fig, target_path)

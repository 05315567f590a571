"""The report's note on more than two classes: how the summary metrics average over the
classes, and each class's recall and precision from the central confusion matrix."""

from __future__ import annotations

from typing import Any


def class_names(config: dict[str, Any]) -> list[str]:
    """The run's ``class-names``; empty when ``config.json`` does not have them."""
    names = config.get("class-names")
    return [name.strip() for name in names.split(",")] if isinstance(names, str) else []


def _ratio(numerator: int, denominator: int) -> str:
    return f"{numerator / denominator:.4f}" if denominator else "n/a"


def per_class_rows(matrix: list[list[int]], names: list[str]) -> list[list[str]]:
    """One row per class (true class on the matrix's rows): name, images, recall, precision."""
    rows = []
    for k, counts in enumerate(matrix):
        predicted = sum(row[k] for row in matrix)
        name = names[k] if k < len(names) else str(k)
        rows.append(
            [name, str(sum(counts)), _ratio(counts[k], sum(counts)), _ratio(counts[k], predicted)]
        )
    return rows


def multiclass_note(names: list[str]) -> str:
    """How ``auc``, ``sensitivity`` and ``specificity`` read with ``names``; empty for two."""
    if len(names) <= 2:
        return ""
    return (
        f"{len(names)} classes ({', '.join(names)}): `auc` is the macro one-vs-rest AUC (each "
        "class's AUC against all the others, averaged over the classes present), `sensitivity` "
        "and `specificity` are the averages over the classes of each class's recall and "
        "specificity."
    )

"""What ``fedclinic audit membership`` shows and writes: the table, the JSON, the ROC plot."""

from __future__ import annotations

from pathlib import Path

from simulations.audit.membership import JSON_FILE, PLOT_FILE
from simulations.audit.rows import AuditResult, AuditRow, fpr_labels

HEADERS = (
    "target",
    "attack",
    "hospital",
    "members",
    "non-members",
    "attack AUC [95 % CI]",
    *(f"TPR at {label} FPR [95 % CI]" for label in ("0.1 %", "1 %")),
    "model AUC",
    "ε",
    "bound",
)


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def table_row(row: AuditRow) -> list[str]:
    figures = row.figures
    tprs = [
        _interval(figures.tpr[fpr], figures.tpr_ci[fpr].low, figures.tpr_ci[fpr].high)
        for fpr in fpr_labels()
    ]
    bound = "-" if row.bound is None else "VIOLATED" if row.bound_violations else "holds"
    return [
        row.target,
        row.attack,
        row.hospital,
        str(figures.members),
        str(figures.non_members),
        _interval(figures.auc, figures.auc_ci.low, figures.auc_ci.high),
        *tprs,
        "-" if row.model_auc is None else f"{row.model_auc:.3f}",
        "-" if row.bound is None else f"{row.bound[0]:.3g}",
        bound,
    ]


def result_table(result: AuditResult) -> str:
    """The rows as a Markdown table (also readable in a terminal)."""
    from common.text import markdown_table as table

    return table(list(HEADERS), [table_row(row) for row in result.rows])


def summary_lines(result: AuditResult) -> list[str]:
    """The lines printed under the table: notes, resolution, DP verdict."""
    lines = list(result.notes)
    lines.append(
        f"lowest resolvable FPR: {result.lowest_fpr:.2g} (1 / non-members); "
        "TPR at a smaller FPR rests on a handful of images"
    )
    privacy = result.privacy
    if privacy.mode == "off":
        lines.append("verdict: no-dp (the run used no differential privacy; nothing to check)")
    else:
        reached = "n/a" if privacy.epsilon is None else f"{privacy.epsilon:.3g}"
        lines.append(
            f"verdict: {result.verdict} (dp={privacy.mode}, ε reached {reached}, "
            f"δ={privacy.delta:g}; a row fails when its TPR's lower 95 % limit exceeds "
            "e^ε·FPR + δ)"
        )
    return lines


def write_outputs(result: AuditResult, out: Path | None = None) -> tuple[Path, Path]:
    """Write the JSON (``out``, default ``RUN_DIR/audit-membership.json``) and the ROC plot
    (``RUN_DIR/plots/audit-roc.png``), both atomically; return their paths."""
    from common.files import write_json_atomic
    from simulations.audit.roc_plot import plot_roc

    target = out if out is not None else result.run_dir / JSON_FILE
    write_json_atomic(target, result.to_json())
    bound = result.rows[0].bound if result.rows else None
    plot = plot_roc(
        result.curves,
        result.run_dir / "plots" / PLOT_FILE,
        bound=bound,
        title=f"membership inference: {result.run_dir.name}",
    )
    return target, plot

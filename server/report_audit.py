"""The report's privacy-audit section, from ``RUN_DIR/audit-membership.json``.

``fedclinic audit membership RUN_DIR`` (simulations/audit/) writes that file; the report
only reads it, so the coordinator never imports the audit. The section appears only when
the file exists; a file that is not the audit's JSON becomes one line naming it (the
report is still written: it also ends every run, which an old audit must not break).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.errors import FedclinicError

AUDIT_FILE = "audit-membership.json"
ROC_PLOT = "audit-roc.png"
TITLE = "## Privacy audit (membership inference)"
LEVEL = "95 %"  # the audit's bootstrap intervals
FPR_POINTS = ((0.001, "0.1 %"), (0.01, "1 %"))  # (FPR, its label), the audit's reported FPRs
READING = (
    "How to read it: an attack AUC near 0.5 and a TPR near its FPR mean the attacker cannot "
    "tell this run's patients from other patients. The TPR at 0.1 % FPR is the share of "
    "patients an attacker can single out while wrongly accusing one non-patient in a thousand "
    "— the figure for the most exposed patients, which an average such as the AUC hides. The "
    "`update` rows are what the coordinator learns from one hospital's update on its own, the "
    "exposure that secure aggregation is meant to close."
)

Pair = tuple[float, float]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="ignore", populate_by_name=True)


class AuditDP(_Frozen):
    mode: Literal["off", "record", "hospital"]
    epsilon: float | None
    delta: float | None


class AuditRow(_Frozen):
    epsilon: float | None
    target: str
    attack: str
    hospital: str
    auc: float
    auc_ci: Pair
    tpr_low: float = Field(alias="tpr_at_0.1%")
    tpr_low_ci: Pair = Field(alias="tpr_at_0.1%_ci")
    tpr_high: float = Field(alias="tpr_at_1%")
    tpr_high_ci: Pair = Field(alias="tpr_at_1%_ci")
    members: int
    non_members: int
    model_auc: float | None
    bound_violations: list[str]


class Audit(_Frozen):
    data: str
    shadow_models: int = Field(alias="shadow-models")
    non_member_splits: list[str] = Field(alias="non-member-splits", default=[])
    dp: AuditDP
    lowest_fpr: float = Field(alias="lowest-fpr", gt=0.0, le=1.0)
    results: list[AuditRow]
    verdict: Literal["pass", "fail", "no-dp"]


def read_audit(path: Path) -> Audit:
    """The audit's JSON; a :class:`FedclinicError` of one line naming ``path`` otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise FedclinicError(f"Cannot read {path}: {error}.") from None
    try:
        return Audit.model_validate_json(text)  # JSON arrays as the intervals' pairs
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            reason = str(first["msg"]).removeprefix("Invalid JSON: ")
            raise FedclinicError(f"Invalid JSON in {path}: {reason}.") from None
        loc = ".".join(str(part) for part in first["loc"])
        where = f"`{loc}`" if loc else "the document"
        if first["type"] == "missing":
            detail = f"{where} is missing"
        else:
            received = repr(first["input"])
            received = received if len(received) <= 60 else received[:57] + "..."
            detail = f"{where}: {first['msg']}. Received: {received}"
        raise FedclinicError(
            f"Invalid content in {path}: {detail} (expected the JSON that "
            "`fedclinic audit membership` writes)."
        ) from None


def audit_lines(run_dir: Path, plots_dir: str) -> list[str]:
    """The section for ``run_dir`` (empty without an audit); ``plots_dir``: the report's
    plot folder, where the audit put its ROC plot."""
    path = run_dir / AUDIT_FILE
    if not path.is_file():
        return []
    try:
        audit = read_audit(path)
    except FedclinicError as error:
        return [TITLE, "", str(error), ""]
    lines = [TITLE, "", *_intro(audit), "", *_table(audit.results), ""]
    bounds = _bound_lines(audit)
    lines += [*bounds, *([""] if bounds else []), _verdict_line(audit), *_violation_lines(audit)]
    lines += [""]
    lines += [_lowest_line(audit), ""]
    if (run_dir / plots_dir / ROC_PLOT).is_file():
        title = "Membership-inference ROC (log axes)"
        lines += [f"![{title}]({plots_dir}/{ROC_PLOT})", ""]
    return [*lines, READING, ""]


def _splits(names: list[str]) -> str:
    """ " (splits `train`, `val`)" — empty for an audit written before the splits were kept."""
    return f" (splits {', '.join(f'`{name}`' for name in names)})" if names else ""


def _intro(audit: Audit) -> list[str]:
    return [
        "Membership inference against this run (`fedclinic audit membership`): members are "
        "the training images of the hospitals that trained, non-members the images of "
        f"`{audit.data}`{_splits(audit.non_member_splits)} that no hospital trained on; "
        "LiRA (offline) used "
        f"{audit.shadow_models} shadow federations. `global`: the final global model; "
        "`update`: one hospital's returned model after one more round, as the coordinator "
        f"sees it. Intervals: {LEVEL} bootstrap. {_dp_text(audit.dp)}"
    ]


def _dp_text(dp: AuditDP) -> str:
    if dp.mode == "off":
        return "The run used no differential privacy."
    kind = "record-level" if dp.mode == "record" else "hospital-level"
    return f"The run used {kind} DP, target ε = {_g(dp.epsilon)}, δ = {_g(dp.delta)}."


def _table(rows: list[AuditRow]) -> list[str]:
    header = ["target", "attack", "hospital", "ε", "attack AUC"]
    header += [f"TPR at {label} FPR" for _, label in FPR_POINTS]
    header += ["members / non-members", "model AUC"]
    body = [
        [
            row.target,
            row.attack,
            row.hospital,
            _g(row.epsilon, none="—"),
            _with_interval(row.auc, row.auc_ci, 3),
            _with_interval(row.tpr_low, row.tpr_low_ci, 4),
            _with_interval(row.tpr_high, row.tpr_high_ci, 4),
            f"{row.members} / {row.non_members}",
            "n/a" if row.model_auc is None else f"{row.model_auc:.3f}",
        ]
        for row in rows
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _bound_lines(audit: Audit) -> list[str]:
    """The DP bound e^ε·FPR + δ at each reported FPR, for each ε the rows name."""
    delta = audit.dp.delta
    if audit.dp.mode == "off" or delta is None:
        return []
    epsilons = sorted({row.epsilon for row in audit.results if row.epsilon is not None})
    return [
        f"- DP bound TPR ≤ e^ε·FPR + δ at ε = {_g(epsilon)}, δ = {_g(delta)}: "
        + ", ".join(
            f"{dp_bound(fpr, epsilon, delta):.4f} at {label} FPR" for fpr, label in FPR_POINTS
        )
        + "."
        for epsilon in epsilons
    ]


def dp_bound(fpr: float, epsilon: float, delta: float) -> float:
    """The largest TPR any attack may reach at ``fpr`` under (ε, δ)-DP."""
    return min(1.0, math.exp(epsilon) * fpr + delta)


def _verdict_line(audit: Audit) -> str:
    if audit.verdict == "no-dp":
        return "**DP check: none** — the run used no DP, so no bound applies."
    if audit.verdict == "pass":
        return f"**DP check: pass** — no measured TPR's lower {LEVEL} limit exceeds the bound."
    return (
        f"**DP check: fail** — a measured TPR's lower {LEVEL} limit exceeds the bound, so the "
        "DP implementation or its accounting is wrong:"
    )


def _violation_lines(audit: Audit) -> list[str]:
    return [
        f"- {row.target}, {row.attack}, {row.hospital}: {violation}"
        for row in audit.results
        for violation in row.bound_violations
    ]


def _lowest_line(audit: Audit) -> str:
    line = (
        f"Lowest resolvable FPR: {_percent(audit.lowest_fpr)} "
        f"(1 / {round(1 / audit.lowest_fpr)} non-members): a TPR "
        "at a smaller FPR cannot be measured with this sample."
    )
    unresolved = [label for fpr, label in FPR_POINTS if fpr < audit.lowest_fpr]
    if unresolved:
        line += f" The TPR at {' and '.join(unresolved)} FPR is therefore not measured."
    return line


def _with_interval(value: float, interval: Pair, digits: int) -> str:
    low, high = interval
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g} %"


def _g(value: float | None, none: str = "n/a") -> str:
    return none if value is None else f"{value:.3g}"

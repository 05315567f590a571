"""``report.md`` with PNG plots: a run explained without reading its logs.

Built only from the run directory (``config.json``, ``metrics.json`` and, after an audit,
``audit-membership.json``), so the same function serves the end of every run and
``fedclinic report RUN_DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.errors import ConfigError, invalid_value
from common.files import atomic_path
from server.records import PHASES, fallback_name, names_of, natural_key, participation
from server.report_audit import audit_lines
from server.report_classes import class_names, multiclass_note, per_class_rows
from server.report_plots import (
    plot_confusion,
    plot_global,
    plot_hospitals,
    plot_participation,
    plot_privacy,
)
from server.report_privacy import final_rows, hospital_epsilons, privacy_intro, privacy_mode
from server.report_settings import (
    coordinator_settings,
    hospital_columns,
    hospital_table_rows,
    hospitals,
    simulation_settings,
)
from server.run_dir import CONFIG_FILE, LAST_MODEL_FILE, METRICS_FILE, MODEL_FILE

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
ROUND_COLUMNS = ("loss", "accuracy", "auc", "sensitivity", "specificity")


def read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``config.json`` and ``metrics.json`` of a run directory."""
    metrics_file = run_dir / METRICS_FILE
    if not metrics_file.is_file():
        raise ConfigError(
            invalid_value("RUN_DIR", "a run directory containing metrics.json", str(run_dir))
        )
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    config_file = run_dir / CONFIG_FILE
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    return config, metrics


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _settings_table(settings: list[tuple[str, Any]]) -> list[str]:
    return _table(["setting", "value"], [[f"`{key}`", f"`{value!r}`"] for key, value in settings])


def _settings_lines(config: dict[str, Any], rounds: list[dict[str, Any]]) -> list[str]:
    rows = hospitals(rounds)
    lines = [
        "## Coordinator settings",
        "",
        "What the coordinator decided for every hospital.",
        "",
        *_settings_table(coordinator_settings(config)),
        "",
        "## Hospitals",
        "",
        "What each hospital reported about its own data (sizes from its last valid replies).",
        "",
    ]
    lines += (
        _table(hospital_columns(rows), hospital_table_rows(rows))
        if rows
        else ["No hospital was sampled."]
    )
    simulated = simulation_settings(config, rows)
    if simulated:
        lines += [
            "",
            "## Simulation settings",
            "",
            "The hospitals were simulated; these settings made their data.",
            "",
            *_settings_table(simulated),
        ]
    return lines


def _status_lines(config: dict[str, Any], metrics: dict[str, Any], run_dir: Path) -> list[str]:
    rounds, outcome = metrics["rounds"], metrics.get("outcome", {"status": "unknown"})
    planned = config.get("num-server-rounds", "?")
    done = rounds[-1]["round"] if rounds else 0
    lines = [f"**Status: {outcome['status']}** — {done} of {planned} rounds recorded."]
    if outcome.get("message"):
        lines.append(f"\n> {outcome['message']}")
    if outcome.get("stopped-early"):
        lines.append(f"\n> {outcome['stopped-early'][0].upper()}{outcome['stopped-early'][1:]}.")
    if "attackers" in outcome:
        names = ", ".join(outcome["attackers"]) or "none (`attack-fraction` too small)"
        lines.append(f"\nSimulated attack `{config.get('attack')}` by: {names}.")
    model = run_dir / MODEL_FILE
    lines.append(
        f"\nFinal model: `{MODEL_FILE}`" if model.is_file() else "\nNo final model was saved."
    )
    if model.is_file() and "best-round" in outcome:
        lines[-1] += _chosen_text(outcome["best-round"], done)
    return lines


def _chosen_text(best: dict[str, Any] | None, last: int) -> str:
    """Which round each saved model is (``best`` from ``metrics.json``'s outcome)."""
    if best is None:
        return f" = round {last}, the last (no round had a validation AUC)."
    return (
        f" = round {best['round']}, the best validation AUC ({_num(best['validation-auc'])}); "
        f"`{LAST_MODEL_FILE}` = round {last}, the last."
    )


def _best_lines(rounds: list[dict[str, Any]], outcome: dict[str, Any]) -> list[str]:
    """The best round's validation and held-out scores: what ``model.keras`` scores."""
    best = outcome.get("best-round")
    chosen = [r for r in rounds if best is not None and r["round"] == best["round"]]
    if not chosen:
        return []
    record = chosen[0]
    rows = [
        [key, _num((record.get("validation") or {}).get(key)), _num(record["evaluate"].get(key))]
        for key in ROUND_COLUMNS
    ]
    header = ["metric", "hospitals (validation)", "hospitals (held-out data)"]
    return [
        f"## Best round by validation AUC (`{MODEL_FILE}`)",
        "",
        f"Round {record['round']}; the held-out scores are for reporting only, the round "
        "was chosen on validation:",
        "",
        *_table(header, rows),
        "",
    ]


def _final_lines(rounds: list[dict[str, Any]], names: list[str]) -> list[str]:
    if not rounds:
        return ["No round completed."]
    last = rounds[-1]
    header = ["metric", "hospitals (held-out data)"]
    central = last.get("central")
    if central is not None:
        header.append("central set")
    rows = [
        [key, _num(last["evaluate"].get(key))]
        + ([_num(central.get(key))] if central is not None else [])
        for key in ROUND_COLUMNS
    ]
    lines = [f"After round {last['round']}:", "", *_table(header, rows)]
    note = multiclass_note(names)
    if note:
        lines += ["", note]
        if central is not None and central.get("confusion-matrix"):
            columns = ["class", "central images", "recall", "precision"]
            lines += ["", *_table(columns, per_class_rows(central["confusion-matrix"], names))]
    return lines


def _round_lines(rounds: list[dict[str, Any]]) -> list[str]:
    header = ["round", "seconds", "trained", "failed", "timed out", "rejected"]
    header += ["val auc"]
    header += [f"eval {k}" for k in ("loss", "accuracy", "auc")] + ["central accuracy"]
    rows = []
    for r in rounds:
        c = participation(r["nodes"]["train"])
        rows.append(
            [str(r["round"]), _num(r.get("seconds")), f"{c['ok']}/{c['sampled']}"]
            + [str(c[s]) for s in ("failed", "timeout", "rejected")]
            + [_num((r.get("validation") or {}).get("auc"))]
            + [_num(r["evaluate"].get(k)) for k in ("loss", "accuracy", "auc")]
            + [_num((r.get("central") or {}).get("accuracy"))]
        )
    return _table(header, rows)


def _problem_lines(rounds: list[dict[str, Any]]) -> list[str]:
    known = names_of(rounds)

    def name(node: str) -> str:  # a node seen only in validation keeps its id's name
        return known.get(node, fallback_name(node))

    lines = [
        f"- round {r['round']}, {phase}, {name(node)}: **{outcome['status']}** — "
        f"{outcome.get('reason', '')}"
        for r in rounds
        for phase in (PHASES[0], "validation", *PHASES[1:])
        for node, outcome in sorted(
            r["nodes"].get(phase, {}).items(), key=lambda item: natural_key(name(item[0]))
        )
        if outcome["status"] != "ok"
    ]
    return lines or ["Every sampled hospital replied with a valid result in every round."]


def _privacy_lines(config: dict[str, Any], rounds: list[dict[str, Any]]) -> list[str]:
    if privacy_mode(rounds) is None:
        return []
    return [
        "## Privacy",
        "",
        *privacy_intro(rounds, config),
        "",
        *_table(["hospital", "rounds trained", "final ε", "δ"], final_rows(rounds)),
        "",
    ]


def _privacy_plot(config: dict[str, Any], rounds: list[dict[str, Any]], plots: Path) -> Path:
    target = config.get("dp-epsilon")
    numbers = [r["round"] for r in rounds]
    if privacy_mode(rounds) == "hospital":
        federation = [(r.get("privacy") or {}).get("epsilon") for r in rounds]
        series = {"federation (hospital-level DP)": federation}
    else:
        series = hospital_epsilons(rounds)
    return plot_privacy(
        series,
        numbers,
        float(target) if isinstance(target, int | float) else None,
        "target dp-epsilon",
        plots / "privacy.png",
    )


def write_report(run_dir: Path) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for the run in ``run_dir``; return the report."""
    config, metrics = read_run(run_dir)
    rounds = metrics["rounds"]
    plots = run_dir / PLOTS_DIR
    images: list[tuple[str, Path]] = []
    if rounds:
        images += [
            ("Global model per round", plot_global(rounds, plots / "global.png")),
            ("Each hospital per round", plot_hospitals(rounds, plots / "hospitals.png")),
            ("Participation per round", plot_participation(rounds, plots / "participation.png")),
        ]
        if privacy_mode(rounds) is not None:
            images.append(("Privacy loss ε per round", _privacy_plot(config, rounds, plots)))
        central = rounds[-1].get("central")
        if central is not None:
            names = class_names(config)
            image = plot_confusion(central["confusion-matrix"], names, plots / "confusion.png")
            images.append(("Confusion matrix on the central set (final round)", image))
    lines = [
        "# fedclinic run report",
        "",
        f"Run directory: `{run_dir}`",
        "",
        *_status_lines(config, metrics, run_dir),
        "",
        *_settings_lines(config, rounds),
        "",
        *_best_lines(rounds, metrics.get("outcome", {})),
        "## Final global model",
        "",
        *_final_lines(rounds, class_names(config)),
        "",
        *_privacy_lines(config, rounds),
        *audit_lines(run_dir, PLOTS_DIR),
        "## Plots",
        "",
        *[f"### {title}\n\n![{title}]({PLOTS_DIR}/{path.name})\n" for title, path in images],
        "## Rounds",
        "",
        *_round_lines(rounds),
        "",
        "## Failures, time-outs and rejected replies",
        "",
        *_problem_lines(rounds),
        "",
    ]
    target = run_dir / REPORT_FILE
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return target

"""The HTML report of a study: accuracy against measured latency, the front, every trial.

Split as Optuna's plots are: `report_data` computes plain records (testable without
plotly), `write_report` draws them. The file embeds plotly.js, so it opens offline.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import NamedTuple

import optuna
from optuna.trial import TrialState

from .checkpoint import atomic_write_text
from .result import front_trials, is_feasible


class TrialRow(NamedTuple):
    number: int
    state: str
    accuracy: float | None
    latency_ms: float | None
    memory_mb: float | None
    speedup: float | None
    criterion: str | None
    status: str  # "front", "dominated", "infeasible", "failed", "running"
    reference: str | None
    note: str


class ReportData(NamedTuple):
    study_name: str
    baseline: dict
    rows: list[TrialRow]
    constraints: dict
    settings: dict


def report_data(study: optuna.Study) -> ReportData:
    """Everything the report shows, as plain data."""
    front = {t.number for t in front_trials(study)}
    rows = []
    for t in study.get_trials(deepcopy=False):
        figures = t.user_attrs.get("measurement", {})
        if t.state == TrialState.COMPLETE:
            status = "front" if t.number in front else ("dominated" if is_feasible(t) else "infeasible")
        elif t.state == TrialState.FAIL:
            status = "failed"
        else:
            status = t.state.name.lower()
        note = t.user_attrs.get("failure") or t.user_attrs.get("skipped_finetune") or ""
        rows.append(TrialRow(
            number=t.number, state=t.state.name,
            accuracy=t.values[0] if t.values and not t.user_attrs.get("skipped_finetune") else None,
            latency_ms=figures.get("latency_ms"), memory_mb=figures.get("memory_mb"),
            speedup=t.user_attrs.get("speedup"),
            criterion=t.user_attrs.get("config", {}).get("criterion"),
            status=status, reference=t.user_attrs.get("reference"), note=note))
    settings = study.user_attrs.get("settings", {})
    return ReportData(study.study_name, study.user_attrs.get("baseline", {}), rows,
                      settings.get("constraints", {}), settings)


_STYLE = {
    "front": dict(color="#1f77b4", size=11, symbol="circle"),
    "dominated": dict(color="#b0b0b0", size=7, symbol="circle"),
    "infeasible": dict(color="#d62728", size=7, symbol="x"),
}


def _figure(data: ReportData):
    import plotly.graph_objects as go

    fig = go.Figure()
    for status, style in _STYLE.items():
        rows = [r for r in data.rows if r.status == status and r.latency_ms is not None]
        if not rows:
            continue
        fig.add_trace(go.Scatter(
            x=[r.latency_ms for r in rows],
            y=[(r.accuracy or 0.0) * 100 for r in rows],
            mode="markers", name=status, marker=style,
            customdata=[r.number for r in rows],
            text=[f"trial {r.number}{' (' + r.reference + ')' if r.reference else ''}<br>"
                  f"speedup {r.speedup:.2f}x<br>memory {r.memory_mb:.1f} MiB<br>{r.criterion}"
                  + (f"<br>{html.escape(r.note)}" if r.note else "") for r in rows],
            hovertemplate="%{y:.2f} %% at %{x:.2f} ms<br>%{text}<extra></extra>"))
    references = [r for r in data.rows if r.reference and r.latency_ms is not None]
    if references:
        fig.add_trace(go.Scatter(
            x=[r.latency_ms for r in references], y=[(r.accuracy or 0) * 100 for r in references],
            mode="markers", name="uniform pruning",
            marker=dict(symbol="diamond-open", size=14, color="#2ca02c", line=dict(width=2)),
            text=[r.reference for r in references], hoverinfo="text"))
    if data.baseline:
        fig.add_trace(go.Scatter(
            x=[data.baseline["latency_ms"]], y=[data.baseline["accuracy"] * 100],
            mode="markers", name="unpruned", marker=dict(symbol="star", size=16, color="#ff7f0e"),
            hovertemplate="unpruned: %{y:.2f} %% at %{x:.2f} ms<extra></extra>"))
    if "latency_ms" in data.constraints:
        fig.add_vline(x=data.constraints["latency_ms"], line_dash="dash",
                      annotation_text="latency limit")
    fig.update_layout(title="Accuracy against measured latency", xaxis_title="latency (ms)",
                      yaxis_title="accuracy (%)", template="plotly_white", height=520)
    return fig


def _table(data: ReportData) -> str:
    head = ("<tr><th>trial</th><th>status</th><th>accuracy</th><th>latency ms</th>"
            "<th>speedup</th><th>memory MiB</th><th>criterion</th><th>note</th></tr>")

    def cell(value, fmt):
        return "" if value is None else format(value, fmt)

    body = "".join(
        f"<tr class='{r.status}'><td>{r.number}</td><td>{r.status}</td>"
        f"<td>{cell(r.accuracy and r.accuracy * 100, '.2f')}</td><td>{cell(r.latency_ms, '.2f')}</td>"
        f"<td>{cell(r.speedup, '.2f')}</td><td>{cell(r.memory_mb, '.1f')}</td>"
        f"<td>{html.escape(r.criterion or '')}</td>"
        f"<td>{html.escape((r.reference + '; ' if r.reference else '') + r.note)}</td></tr>"
        for r in data.rows)
    return f"<table>{head}{body}</table>"


def write_report(study: optuna.Study, path: str | Path) -> Path:
    """Write the self-contained HTML report of `study` to `path` (atomically) and return it."""
    data = report_data(study)
    figure = _figure(data).to_html(include_plotlyjs=True, full_html=False, div_id="pareto")
    settings = html.escape(json.dumps(data.settings, indent=1, default=str))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>autoprune: {html.escape(data.study_name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ddd;padding:3px 6px}}
tr.front{{background:#e8f1fb}}tr.failed,tr.infeasible{{color:#a33}}</style></head>
<body><h1>autoprune study <code>{html.escape(data.study_name)}</code></h1>
{figure}
<h2>All trials</h2>{_table(data)}
<h2>Settings</h2><pre>{settings}</pre>
</body></html>"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page)
    return path

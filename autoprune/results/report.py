"""The HTML report of a study: pick a model from the measured Pareto front.

Split as Optuna's plots are: `report_data` computes plain records (testable without plotly
or a browser), `write_report` draws them into one self-contained file. plotly.js is
embedded, so the report opens offline; a small script shows a trial's card when a point is
clicked and sorts the trial table.
"""

from __future__ import annotations

import html
import json
import math
import shlex
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..console import ProgressBar
from ..runtime.latency_model import prediction_errors
from ..runtime.task import ACCURACY, metric_of, show_metric
from ..store.checkpoint import atomic_write_text
from ..store.records import (DIRECTIONS, OBJECTIVE_NAMES, StudyRecord, TrialRecord,
                             timed_against_predicted)
from ..store.storage import STORAGE_ENV, has_password, redact_url
from .pareto import front_trials, hypervolume_history, is_feasible
from .report_page import CSS, SCRIPT
from .settings_table import settings_table_html


class TrialRow(NamedTuple):
    """One trial as the report shows it; figures are None where the trial has none."""

    number: int
    status: str  # "front", "dominated", "stopped early", "infeasible", "not fine-tuned", "failed", ...
    accuracy: float | None
    latency_ms: float | None
    predicted_latency_ms: float | None  # the latency model's, before pruning
    memory_mb: float | None
    speedup: float | None
    params: int | None
    macs: int | None
    criterion: str | None
    reference: str | None
    note: str
    seconds: float | None
    params_searched: dict[str, Any]
    kept_channels: list[int] | None
    full_finetune: dict | None = None  # SearchResult.finetune's record: accuracy, epochs, ...
    fp32_accuracy: float | None = None  # an int8 trial's metric before quantization


class ReportData(NamedTuple):
    study_name: str
    storage: str | None
    baseline: dict
    settings: dict
    layers: list[str]  # Conv/Linear layers of the unpruned model, in order
    base_channels: list[int]
    rows: list[TrialRow]
    hypervolume: list[tuple[int, float, float]]  # (trial, seconds since start, value)
    importance: dict[str, dict[str, float]]  # objective -> parameter -> importance
    generated: str
    latency_pairs: list[tuple[int, float, float]] = []  # (trial, predicted, timed in the trial)
    latency_errors: dict | None = None   # latency_model.prediction_errors of those pairs
    latency_model: dict | None = None    # how the table was built: layers, seconds, fit
    metric: dict = ACCURACY              # the first objective: name, direction, percentage


def _scale(metric: dict) -> float:
    """Plotted and tabled metric values are percentages for a share like top-1."""
    return 100.0 if metric.get("percent") else 1.0


def _plotted(value: float | None, metric: dict) -> float | None:
    """A metric value on the chart's axis: None (no point) where there is none to plot."""
    if value is None or not math.isfinite(value):
        return None if metric["direction"] == "minimize" else 0.0
    return _scale(metric) * value


def _axis_title(metric: dict) -> str:
    arrow = "higher is better" if metric["direction"] == "maximize" else "lower is better"
    return f"{metric['name']} ({'%, ' if metric.get('percent') else ''}{arrow})"


def _status(trial: FrozenTrial, front: set[int]) -> str:
    if trial.state == TrialState.COMPLETE:
        record = TrialRecord.of(trial)
        if record.skipped_finetune:
            return "not fine-tuned"
        if trial.number in front:
            return "front"
        if record.stopped_early:
            return "stopped early"
        if is_feasible(trial):
            return "dominated"
        # below the accuracy floor alone: a model too poor to offer, not one over a limit
        broken = {key for key, value in trial.constraints.items() if value > 0}
        return "below floor" if broken == {"min_accuracy"} else "infeasible"
    return {TrialState.FAIL: "failed"}.get(trial.state, trial.state.name.lower())


def _row(trial: FrozenTrial, front: set[int], layers: list[str]) -> TrialRow:
    record = TrialRecord.of(trial)
    figures = record.measurement or {}
    kept = record.kept_channels
    status = _status(trial, front)
    seconds = None
    if trial.datetime_start and trial.datetime_complete:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return TrialRow(
        number=trial.number, status=status,
        accuracy=(trial.values[0] if trial.values and status != "not fine-tuned"
                  and math.isfinite(trial.values[0]) else None),
        latency_ms=figures.get("latency_ms"), predicted_latency_ms=record.predicted_latency_ms,
        memory_mb=figures.get("memory_mb"),
        speedup=record.speedup, params=figures.get("params"),
        macs=figures.get("macs"), criterion=trial.params.get("criterion"),
        reference=record.reference,
        note=(record.failure or record.rejected_before_pruning and
              f"rejected before pruning: {record.rejected_before_pruning}" or
              record.skipped_finetune or record.stopped_early or _promotion_note(record)),
        seconds=seconds, params_searched=dict(trial.params),
        kept_channels=[kept.get(layer, 0) for layer in layers] if kept else None,
        fp32_accuracy=record.fp32_accuracy)


def _full_summary(entry: dict | None) -> dict | None:
    """What the card shows of a full fine-tune (not its weights' artifact ids)."""
    if not entry:
        return None
    return {key: entry[key] for key in ("accuracy", "brief_accuracy", "epochs", "best_epoch",
                                        "seconds")}


def _promotion_note(record: TrialRecord) -> str:
    if record.quantizes is not None:
        return f"trial {record.quantizes}'s fine-tuned weights, quantized to int8"
    if record.continues is None:
        return ""
    return (f"continues trial {record.continues}: +{record.promoted_steps} fine-tuning steps "
            f"({record.finetuned_steps} in all)")


def _importance(trials: list[FrozenTrial], metric: dict) -> dict[str, dict[str, float]]:
    """Importance of each searched parameter for each objective (Optuna's default, PED-ANOVA).

    PED-ANOVA scores what it takes to reach *low* target values, so a maximized metric is
    negated.
    Only fine-tuned, completed trials count (a skipped trial's accuracy is not a result).
    """
    usable = [t for t in trials if t.state == TrialState.COMPLETE
              and not TrialRecord.of(t).skipped_finetune
              and all(math.isfinite(v) for v in t.values)]
    if len(usable) < 4:
        return {}
    directions = [metric["direction"], *DIRECTIONS[1:]]
    names = [metric["name"], *OBJECTIVE_NAMES[1:]]
    study = optuna.create_study(directions=directions)
    study.add_trials(usable)
    signs = {name: -1.0 if direction == "maximize" else 1.0
             for name, direction in zip(names, directions)}
    result = {}
    for index, name in enumerate(names):
        with warnings.catch_warnings():  # it warns that it minimises; the sign is handled above
            warnings.simplefilter("ignore", UserWarning)
            try:
                result[name] = optuna.importance.get_param_importances(
                    study, target=lambda t, i=index: signs[name] * t.values[i])
            except (RuntimeError, ValueError):  # e.g. every trial has the same value
                continue
    return result


def report_data(study: optuna.Study, storage: str | None = None) -> ReportData:
    """Everything the report shows, as plain data."""
    trials = study.get_trials(deepcopy=False)
    record = StudyRecord.of(study)
    baseline = record.baseline or {}
    settings = dict(record.settings or {})
    settings.setdefault("finished", record.finished)
    settings["finetune_steps"] = record.finetune_steps
    base_channels = record.base_channels or {}
    layers = list(base_channels)
    front = {t.number for t in front_trials(study)}
    full = record.finetuned or {}
    rows = [_row(t, front, layers)._replace(full_finetune=_full_summary(full.get(str(t.number))))
            for t in trials]
    final = record.final_latency_ms or {}
    if final:  # the interleaved re-measurement of the front replaces the in-trial timing
        base_latency = final.get("baseline", baseline.get("latency_ms"))
        # Other trials keep their paired speedup, put on the same scale: the machine may run
        # faster or slower at the end than during the search, and mixing the two scales once
        # drew dominated trials faster than the front (tests/test_report.py).
        rows = [r._replace(latency_ms=final[str(r.number)],
                           speedup=base_latency / final[str(r.number)])
                if str(r.number) in final else
                r._replace(latency_ms=base_latency / r.speedup) if r.speedup else r
                for r in rows]
        baseline = {**baseline, "latency_ms": base_latency}
    started = min((t.datetime_start for t in trials if t.datetime_start), default=None)
    history = []
    metric = metric_of(study)
    if baseline:
        for trial, value in hypervolume_history(trials, baseline["latency_ms"],
                                                baseline["memory_mb"], metric["direction"],
                                                baseline["accuracy"]):
            history.append((trial.number, (trial.datetime_complete - started).total_seconds(), value))
    pairs = timed_against_predicted(trials)
    model = record.latency_model
    return ReportData(study.study_name, storage and redact_url(storage), baseline, settings, layers,
                      [base_channels[layer] for layer in layers], rows, history,
                      _importance(trials, metric), datetime.now().isoformat(timespec="seconds"),
                      pairs, prediction_errors((p, m) for _, p, m in pairs),
                      model and {"layers": len(model["layers"]),
                                 "build_seconds": model["build_seconds"],
                                 "calibration_points": len(model["calibration"]),
                                 "coefficients": model["coefficients"]}, metric)


_MARKERS = {
    "front": dict(color="#1f77b4", size=11, symbol="circle", line=dict(width=1, color="#fff")),
    "dominated": dict(color="#9e9e9e", size=7, symbol="circle", opacity=0.7),
    # fine-tuning cut short by a faster, better trial (early_stop.py): accuracy of fewer steps
    "stopped early": dict(color="#9e9e9e", size=7, symbol="circle-open", opacity=0.7),
    "infeasible": dict(color="#d62728", size=8, symbol="x"),
    "below floor": dict(color="#cfcfcf", size=7, symbol="circle", opacity=0.6),
    "not fine-tuned": dict(color="#d62728", size=7, symbol="triangle-down-open"),
}


def _pareto_figure(data: ReportData, cost: str, title: str):
    import plotly.graph_objects as go

    fig, metric = go.Figure(), data.metric
    shown = "%{y:.2f} %" if metric.get("percent") else "%{y:.4g}"
    for status, marker in _MARKERS.items():
        rows = [r for r in data.rows if r.status == status and getattr(r, cost) is not None]
        if not rows:
            continue
        fig.add_trace(go.Scatter(
            x=[getattr(r, cost) for r in rows],
            y=[_plotted(r.accuracy, metric) for r in rows],
            mode="markers", name=f"{status} ({len(rows)})", marker=marker,
            customdata=[r.number for r in rows],
            text=[f"trial {r.number}" + (f" ({r.reference})" if r.reference else "") +
                  f"<br>speedup {r.speedup:.2f}x, memory {r.memory_mb:.1f} MiB<br>"
                  f"{r.criterion}" + (f"<br>{html.escape(r.note[:120])}" if r.note else "")
                  for r in rows],
            hovertemplate=shown + " at %{x:.3g}<br>%{text}<extra></extra>"))
    references = [r for r in data.rows if r.reference and getattr(r, cost) is not None]
    for name, symbol, color, chosen in (
            ("uniform pruning (reference)", "diamond-open", "#2ca02c",
             [r for r in references if r.reference.startswith("uniform")]),
            ("warm start (reference)", "square-open", "#9467bd",
             [r for r in references if not r.reference.startswith("uniform")])):
        if chosen:
            fig.add_trace(go.Scatter(
                x=[getattr(r, cost) for r in chosen],
                y=[_plotted(r.accuracy, metric) for r in chosen], mode="markers",
                name=name, customdata=[r.number for r in chosen],
                marker=dict(symbol=symbol, size=15, color=color, line=dict(width=2)),
                text=[r.reference for r in chosen],
                hovertemplate="%{text}: " + shown + " at %{x:.3g}<extra></extra>"))
    if data.baseline:
        fig.add_trace(go.Scatter(
            x=[data.baseline[cost]], y=[_plotted(data.baseline["accuracy"], metric)],
            mode="markers", name="unpruned", marker=dict(symbol="star", size=17, color="#ff7f0e"),
            hovertemplate="unpruned: " + shown + " at %{x:.3g}<extra></extra>"))
    constraints = data.settings.get("constraints", {})
    if cost in constraints:
        fig.add_vline(x=constraints[cost], line_dash="dash", line_color="#d62728",
                      annotation_text=f"{cost} limit")
    if "max_accuracy_drop" in constraints and data.baseline:
        allowed = data.baseline["accuracy"] + (constraints["max_accuracy_drop"] * (
            -1 if metric["direction"] == "maximize" else 1))
        fig.add_hline(y=_plotted(allowed, metric),
                      line_dash="dash", line_color="#d62728", annotation_text="allowed drop")
    floor = data.settings.get("accuracy_floor")
    if floor:
        fig.add_hline(y=_plotted(floor, metric), line_dash="dot", line_color="#9e9e9e",
                      annotation_text="front floor", annotation_position="bottom right")
    unit = "ms" if cost == "latency_ms" else "MiB"
    fig.update_layout(title=title, xaxis_title=f"{cost.replace('_', ' ')[:-3]} ({unit})",
                      yaxis_title=_axis_title(metric), template="plotly_white", height=480,
                      clickmode="event", legend=dict(orientation="h", y=-0.2))
    return fig


def _hypervolume_figure(data: ReportData):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("by trial", "by wall clock (s)"))
    numbers = [h[0] for h in data.hypervolume]
    seconds = [h[1] for h in data.hypervolume]
    values = [h[2] for h in data.hypervolume]
    fig.add_trace(go.Scatter(x=numbers, y=values, mode="lines+markers", line_shape="hv",
                             name="by trial"), 1, 1)
    fig.add_trace(go.Scatter(x=seconds, y=values, mode="lines+markers", line_shape="hv",
                             name="by time"), 1, 2)
    fig.update_layout(title="Hypervolume of the front as it grew", template="plotly_white",
                      height=320, showlegend=False, yaxis_title="hypervolume")
    return fig


def _latency_prediction_figure(data: ReportData):
    """Predicted (latency model, before pruning) against measured (paired, in the trial)."""
    import plotly.graph_objects as go

    numbers, predicted, measured = zip(*data.latency_pairs)
    low, high = min(predicted + measured) * 0.9, max(predicted + measured) * 1.1
    fig = go.Figure()
    for factor, name in ((1.0, "prediction = measurement"), (1.1, "+10 %"), (0.9, "-10 %")):
        fig.add_trace(go.Scatter(x=[low, high], y=[low * factor, high * factor], mode="lines",
                                 name=name, hoverinfo="skip",
                                 line=dict(color="#999", dash="solid" if factor == 1 else "dot")))
    fig.add_trace(go.Scatter(x=predicted, y=measured, mode="markers", name="trial",
                             customdata=numbers, marker=dict(color="#1f77b4", size=8),
                             hovertemplate="trial %{customdata}: predicted %{x:.3g} ms, "
                                           "measured %{y:.3g} ms<extra></extra>"))
    errors = data.latency_errors
    fig.update_layout(title=f"Latency model: predicted against measured ({errors['count']} "
                            f"trials; median |error| {errors['median_abs_error']:.1%}, "
                            f"{errors['within_10pct']:.0%} within ±10 %)",
                      xaxis_title="predicted before pruning (ms)",
                      yaxis_title="measured in the trial, paired (ms)",
                      template="plotly_white", height=420, legend=dict(orientation="h", y=-0.2))
    return fig


def _importance_figure(data: ReportData):
    import plotly.graph_objects as go

    fig = go.Figure()
    for objective, importances in data.importance.items():
        names = list(importances)
        fig.add_trace(go.Bar(x=[importances[n] for n in names], y=names, orientation="h",
                             name=objective))
    fig.update_layout(title="Which searched parameters mattered (PED-ANOVA, per objective)",
                      template="plotly_white", barmode="group",
                      height=max(300, 60 + 22 * len(next(iter(data.importance.values()), {})) * 3),
                      xaxis_title="importance (normalised per objective)")
    return fig


def export_commands(data: ReportData) -> dict[str, str]:
    """Templates of the commands that export a trial (`{trial}` is filled in by the page).

    A storage with a password is named by the environment variable that holds its URL, so
    the command works when pasted and the report holds no secret.
    """
    name = shlex.quote(data.study_name)
    if data.storage and has_password(data.storage):
        cli_storage = f' --storage "${STORAGE_ENV}"'
        python_storage = f"os.environ[{STORAGE_ENV!r}]"
        note = (f"# {STORAGE_ENV} holds the storage URL ({redact_url(data.storage)}); "
                "the report never contains its password\n")
    else:
        cli_storage = f" --storage {shlex.quote(data.storage)}" if data.storage else ""
        python_storage, note = repr(data.storage), ""
    return {
        "cli": f"{note}autoprune export {name}{cli_storage} --trial {{trial}} --format onnx "
               f"--output model-{{trial}}.onnx",
        "python": f"{note}result = autoprune.SearchResult.from_storage({data.study_name!r}, "
                  f"{python_storage})\nresult.export({{trial}}, \"model-{{trial}}.onnx\", "
                  f"format=\"onnx\")   # or \"safetensors\", \"torchscript\"",
    }


def _table(data: ReportData) -> str:
    metric = data.metric
    columns = ["trial", "status", f"{metric['name']}{' %' if metric.get('percent') else ''}",
               "latency ms", "predicted ms", "speedup",
               "memory MiB",
               "params M", "MACs M", "criterion", "seconds", "reason / note"]
    head = "".join(f"<th data-col='{i}'>{c}</th>" for i, c in enumerate(columns))

    def cell(value, fmt=""):
        return "" if value is None else html.escape(format(value, fmt))

    body = "".join(
        f"<tr class='{r.status.replace(' ', '-')}' data-trial='{r.number}'>"
        f"<td>{r.number}</td><td>{r.status}</td>"
        f"<td>{cell(None if r.accuracy is None else _scale(metric) * r.accuracy, '.2f' if metric.get('percent') else '.4g')}</td>"
        f"<td>{cell(r.latency_ms, '.3f')}</td><td>{cell(r.predicted_latency_ms, '.3f')}</td>"
        f"<td>{cell(r.speedup, '.2f')}</td>"
        f"<td>{cell(r.memory_mb, '.1f')}</td>"
        f"<td>{cell(None if r.params is None else r.params / 1e6, '.3f')}</td>"
        f"<td>{cell(None if r.macs is None else r.macs / 1e6, '.2f')}</td>"
        f"<td>{cell(r.criterion)}</td><td>{cell(r.seconds, '.1f')}</td>"
        f"<td>{html.escape(((r.reference + '; ') if r.reference else '') + r.note)}</td></tr>"
        for r in data.rows)
    return f"<table id='trials'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"





def _summary(data: ReportData) -> str:
    front = [r for r in data.rows if r.status == "front"]
    counts = {}
    for r in data.rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    base = data.baseline
    items = [("trials", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"),
             ("front", f"{len(front)} models")]
    if base:
        items.append(("unpruned", f"{data.metric['name']} {show_metric(base['accuracy'], data.metric)}"
                                  f", {base['latency_ms']:.3f} ms, "
                                  f"{base['memory_mb']:.1f} MiB, {base['params'] / 1e6:.2f} M params"))
    if data.hypervolume:
        items.append(("hypervolume", f"{data.hypervolume[-1][2]:.4f}"))
    if data.latency_model:
        model, errors = data.latency_model, data.latency_errors
        told = (f"median |error| {errors['median_abs_error']:.1%}, {errors['within_10pct']:.0%} "
                f"within ±10 % over {errors['count']} trials; " if errors else "")
        items.append(("latency model", f"{told}{model['layers']} layers tabled and "
                                       f"{model['calibration_points']} pruned copies timed in "
                                       f"{model['build_seconds']:.1f} s"))
    running = counts.get("running", 0)
    if running or not data.settings.get("finished"):
        items.append(("state", f"search still running or stopped early ({running} trials running)"))
    return "<table class='summary'>" + "".join(
        f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in items) + "</table>"


def render_report(data: ReportData) -> str:
    """The report page for `data`, as one HTML string with plotly.js inlined."""
    from plotly.offline import get_plotlyjs

    name = "Accuracy" if data.metric["name"] == "accuracy" else data.metric["name"]
    figures = {"pareto-latency": _pareto_figure(data, "latency_ms", f"{name} against latency"),
               "pareto-memory": _pareto_figure(data, "memory_mb", f"{name} against memory")}
    if data.hypervolume:
        figures["hypervolume"] = _hypervolume_figure(data)
    if data.latency_pairs:
        figures["latency-prediction"] = _latency_prediction_figure(data)
    if data.importance:
        figures["importance"] = _importance_figure(data)
    figures_json = json.dumps({k: json.loads(f.to_json()) for k, f in figures.items()})
    page_data = {"baseline": data.baseline, "layers": data.layers, "metric": data.metric,
                 "base_channels": data.base_channels, "commands": export_commands(data),
                 "trials": [r._asdict() for r in data.rows]}

    def embed(value: str) -> str:  # JSON inside <script> must not close the tag
        return value.replace("</", "<\\/")

    title = html.escape(data.study_name)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>autoprune: {title}</title>
<style>{CSS}</style><script>{get_plotlyjs()}</script></head>
<body><h1>autoprune study <code>{title}</code></h1>
<p>Generated {data.generated}. Click a point (or a table row) to see its trial card and
the command that exports it. Latencies of front members are the final interleaved
re-measurement where the search got that far; every other trial's is its paired speedup
applied to the unpruned model's latency in that re-measurement.</p>
{_summary(data)}
<div class="grid"><div id="pareto-latency"></div><div id="pareto-memory"></div></div>
<div id="card"></div>
{'<div id="hypervolume"></div>' if "hypervolume" in figures else ''}
{'<div id="latency-prediction"></div>' if "latency-prediction" in figures else ''}
{'<div id="importance"></div>' if "importance" in figures else ''}
<h2>All trials</h2><div class="scroll">{_table(data)}</div>
<h2>Settings</h2>{settings_table_html(data.settings)}
<script type="application/json" id="report-data">{embed(json.dumps(page_data, default=str))}</script>
<script type="application/json" id="figures">{embed(figures_json)}</script>
<script>{SCRIPT}</script>
</body></html>"""


def write_report(study: optuna.Study, path: str | Path, storage: str | None = None) -> Path:
    """Write the self-contained HTML report of `study` to `path` (atomically) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ProgressBar("report", total=2, unit="stage") as bar:
        data = report_data(study, storage)
        bar.update(1)
        atomic_write_text(path, render_report(data))
        bar.update(1)
    return path

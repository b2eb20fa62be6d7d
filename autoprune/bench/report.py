"""The benchmark's comparison page: one self-contained HTML file (plotly.js inlined)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

COLOURS = {"uniform": "#7f7f7f", "uniform-int8": "#8c564b", "global": "#bcbd22",
           "random": "#17becf", "fastnas": "#d62728", "autoprune-fp32": "#9467bd",
           "autoprune-gp": "#2ca02c", "autoprune-derived": "#ff7f0e", "autoprune": "#1f77b4"}


def _figure(run: dict[str, Any]):
    """One repeat: every model (faint), the offered models' test front (line)."""
    import plotly.graph_objects as go

    base = run["unpruned"]
    fig = go.Figure()
    for method, summary in run["methods"].items():
        mine = [m for m in run["models"] if m["method"] == method]
        colour = COLOURS.get(method, "#000")
        fig.add_trace(go.Scatter(
            x=[base["latency_ms"] / m["latency_ms"] for m in mine],
            y=[100 * m["accuracy"] for m in mine], mode="markers", name=f"{method} models",
            legendgroup=method, marker={"color": colour, "size": 8, "opacity": 0.5, "symbol": [
                "diamond" if m.get("precision") == "int8" else "circle" for m in mine]},
            text=[f"{m['label']}<br>{m.get('precision', 'fp32')}, {m['latency_ms']:.2f} ms, {m['macs'] / 1e6:.1f} M MACs<br>"
                  f"selection accuracy {100 * m['select_accuracy']:.2f} %" for m in mine],
            hoverinfo="text+x+y"))
        fig.add_trace(go.Scatter(
            x=[p["speedup"] for p in summary["front"]], y=[100 * p["accuracy"] for p in summary["front"]],
            mode="lines", line={"color": colour, "shape": "hv"}, name=f"{method} front",
            legendgroup=method))
    fig.add_trace(go.Scatter(x=[1.0], y=[100 * base["accuracy"]], mode="markers", name="unpruned",
                             marker={"symbol": "star", "size": 14, "color": "black"}))
    fig.update_layout(title=f"Seed {run['seed']}: test accuracy against measured speedup "
                            "(latencies timed interleaved)",
                      xaxis_title="speedup over the unpruned model (x)",
                      yaxis_title="test accuracy (%)", template="plotly_white", height=520)
    return fig


def _cell(spread: dict[str, float] | None, percent: bool = True, digits: int = 2) -> str:
    if spread is None:
        return "<td>–</td>"
    scale, unit = (100, " %") if percent else (1, "")
    mean, low, high = (scale * spread[k] for k in ("mean", "min", "max"))
    band = "" if low == high else f"<br><small>{low:.{digits}f} – {high:.{digits}f}</small>"
    return f"<td>{mean:.{digits}f}{unit}{band}</td>"


def _reach_cell(summary: dict[str, Any]) -> str:
    """The share of its budget a method needed to match uniform's hypervolume, and in how many
    repeats it did (files from before this figure: blank)."""
    if "reached_uniform_hypervolume" not in summary:
        return "<td></td>"
    cell = _cell(summary.get("budget_to_uniform_hypervolume"), True, 0)
    return cell.replace("</td>", f"<br><small>in {summary['reached_uniform_hypervolume']} of "
                                 f"{summary['repeats']}</small></td>")


def _table(results: dict[str, Any], figure: str, title: str) -> str:
    methods = results["methods"]
    speedups = list(next(iter(methods.values()))[figure]) if methods else []
    head = ("<tr><th>method</th><th>hypervolume</th>"
            + "".join(f"<th>{title} {s}</th>" for s in speedups)
            + "<th>speedup / MAC reduction</th><th>overhead share</th>"
            "<th>budget to uniform's hypervolume</th><th>wall s</th></tr>")
    rows = []
    for method, s in methods.items():
        cells = "".join(_cell(s[figure][k]) for k in speedups)
        rows.append(f"<tr><td>{html.escape(method)}</td>{_cell(s['hypervolume'], False, 4)}"
                    f"{cells}{_cell(s['speedup_per_mac_reduction_median'], False)}"
                    f"{_cell(s['overhead_share'], True, 1)}{_reach_cell(s)}"
                    f"{_cell(s['wall_seconds'], False, 0)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _int8_table(results: dict[str, Any]) -> str:
    """What int8 added on top of pruning, for the methods that made int8 models."""
    rows = [f"<tr><td>{html.escape(method)}</td>{_cell(s.get('int8_speedup_over_fp32_median'), False)}"
            f"{_cell(s.get('int8_accuracy_cost_median'))}{_cell(s.get('offered_int8'), False, 1)}"
            f"<td>{s['repeats_with_int8']} of {s['repeats']}</td></tr>"
            for method, s in results["methods"].items() if s.get("repeats_with_int8")]
    if not rows:
        return ""
    return ("<h2>int8 on top of pruning</h2><p>Over each method's int8 models: the median "
            "speedup of the int8 graph over the same pruned model in fp32 (timed interleaved with "
            "it) and the median test accuracy it lost (fp32 minus int8, points); how many int8 "
            "models the method offered.</p><table><tr><th>method</th><th>int8 over fp32</th>"
            "<th>accuracy cost</th><th>int8 offered</th><th>repeats with int8</th></tr>"
            f"{''.join(rows)}</table>")


def render_comparison(results: dict[str, Any]) -> str:
    from plotly.offline import get_plotlyjs

    figures = [json.dumps(json.loads(_figure(run).to_json())).replace("</", "<\\/")
               for run in results["runs"]]
    details = html.escape(json.dumps({k: results.get(k) for k in
                                      ("command", "date", "machine", "target", "data",
                                       "equal_budget",
                                       "recipe", "splits", "hypervolume_reference", "skipped",
                                       "unpruned")},
                                     indent=1))
    repeats = results["repeats"]
    plots = "".join(f'<div id="run{i}"></div>' for i in range(len(figures)))
    scripts = "".join(f"const f{i} = JSON.parse({json.dumps(f)});\n"
                      f"Plotly.newPlot('run{i}', f{i}.data, f{i}.layout, {{displaylogo: false}});\n"
                      for i, f in enumerate(figures))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>autoprune bench</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}small{{color:#666}}</style>
<script>{get_plotlyjs()}</script></head><body>
<h1>autoprune bench</h1>
<p>{repeats} repeat{'s' if repeats > 1 else ''} (seeds: other selection/test halves, samplers
and fine-tuning order); each cell is the mean over repeats, with min – max below it. Each
method offers the models that no faster model of its own beats on the selection split; those
are scored on the test split and timed in one process, interleaved with the unpruned model.
"–": not reached in every repeat. Overhead share: wall time that is neither fine-tuning nor
evaluation. Budget to uniform's hypervolume: the share of its wall clock a method needed
before the models it had finished matched the whole uniform sweep's hypervolume (mean over the
repeats where it did).</p>
<h2>The model a user would pick</h2>
<p>At each speedup: the test accuracy of the method's model with the best selection accuracy
among those at least that fast.</p>
{_table(results, "picked_at_speedup", "picked at")}
<h2>Fronts</h2>
<p>Test accuracy interpolated on the front of the offered models.</p>
{_table(results, "accuracy_at_speedup", "accuracy at")}
{_int8_table(results)}
{plots}
<h2>Setup</h2><pre>{details}</pre>
<script>{scripts}</script>
</body></html>"""


def write_comparison(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render_comparison(results))
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m autoprune.bench.report RESULTS.json [HTML]`: rebuild a committed run's
    comparison page (runs keep only results.json; the page inlines 4.7 MB of plotly.js)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print(main.__doc__, file=sys.stderr)
        return 2
    source = Path(args[0])
    target = Path(args[1]) if len(args) == 2 else source.with_name("comparison.html")
    results = json.loads(source.read_text())
    if "runs" not in results:
        print(f"{source} is from before repeated runs (one run, no per-seed figures): its "
              "README has its figures", file=sys.stderr)
        return 2
    write_comparison(results, target)
    print(f"written: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The benchmark's comparison page: one self-contained HTML file (plotly.js inlined)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

COLOURS = {"uniform": "#7f7f7f", "global": "#bcbd22", "random": "#17becf",
           "fastnas": "#d62728", "autoprune": "#1f77b4"}


def _figure(results: dict[str, Any]):
    import plotly.graph_objects as go

    base = results["unpruned"]
    fig = go.Figure()
    for method, summary in results["methods"].items():
        mine = [m for m in results["models"] if m["method"] == method]
        colour = COLOURS.get(method, "#000")
        fig.add_trace(go.Scatter(
            x=[base["latency_ms"] / m["latency_ms"] for m in mine],
            y=[100 * m["accuracy"] for m in mine], mode="markers", name=f"{method} models",
            legendgroup=method, marker={"color": colour, "size": 8, "opacity": 0.5},
            text=[f"{m['label']}<br>{m['latency_ms']:.2f} ms, {m['macs'] / 1e6:.1f} M MACs"
                  for m in mine], hoverinfo="text+x+y"))
        fig.add_trace(go.Scatter(
            x=[p["speedup"] for p in summary["front"]], y=[100 * p["accuracy"] for p in summary["front"]],
            mode="lines", line={"color": colour, "shape": "hv"}, name=f"{method} front",
            legendgroup=method))
    fig.add_trace(go.Scatter(x=[1.0], y=[100 * base["accuracy"]], mode="markers", name="unpruned",
                             marker={"symbol": "star", "size": 14, "color": "black"}))
    fig.update_layout(title="Test accuracy against measured speedup (latencies timed interleaved)",
                      xaxis_title="speedup over the unpruned model (x)",
                      yaxis_title="test accuracy (%)", template="plotly_white", height=520)
    return fig


def _table(results: dict[str, Any]) -> str:
    speedups = next(iter(results["methods"].values()))["accuracy_at_speedup"].keys() \
        if results["methods"] else []
    head = ("<tr><th>method</th><th>models</th><th>hypervolume</th>"
            + "".join(f"<th>accuracy at {s}</th>" for s in speedups)
            + "<th>speedup / MAC reduction</th><th>overhead share</th><th>wall s</th></tr>")
    rows = []
    for method, s in results["methods"].items():
        cells = "".join("<td>–</td>" if v is None else f"<td>{100 * v:.2f} %</td>"
                        for v in s["accuracy_at_speedup"].values())
        rows.append(f"<tr><td>{html.escape(method)}</td><td>{s['models']}</td>"
                    f"<td>{s['hypervolume']:.4f}</td>{cells}"
                    f"<td>{s['speedup_per_mac_reduction_median']:.2f}</td>"
                    f"<td>{100 * s['overhead_share']:.1f} %</td><td>{s['wall_seconds']:.0f}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def render_comparison(results: dict[str, Any]) -> str:
    from plotly.offline import get_plotlyjs

    figure = json.dumps(json.loads(_figure(results).to_json())).replace("</", "<\\/")
    details = html.escape(json.dumps({k: results[k] for k in
                                      ("command", "date", "machine", "recipe", "splits",
                                       "hypervolume_reference", "skipped", "unpruned")},
                                     indent=1))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>autoprune bench</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}</style>
<script>{get_plotlyjs()}</script></head><body>
<h1>autoprune bench</h1>
<p>Every model is scored on the test split and timed in one process, interleaved with the
unpruned model. Accuracy at a speedup is interpolated on each method's front; "–": the front
never gets that fast. Overhead share: wall time that is neither fine-tuning nor evaluation.</p>
{_table(results)}
<div id="comparison"></div>
<h2>Setup</h2><pre>{details}</pre>
<script>const f = JSON.parse({json.dumps(figure)});
Plotly.newPlot('comparison', f.data, f.layout, {{displaylogo: false}});</script>
</body></html>"""


def write_comparison(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render_comparison(results))
    return path

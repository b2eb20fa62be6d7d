"""The report's "Settings" section: what a run was asked to do, as a table a person reads.

The study records its settings as nested JSON (`settings` user attribute); a JSON dump of it
is hard to scan. Plain values go in one "run" group; each nested record (the search space,
data, library versions, the CLI options) becomes a group of its own; the search dimensions
become a small table of their own.
"""

from __future__ import annotations

import html
from typing import Any

# Shown first, in this order; any other key follows in the order it was recorded.
_RUN_ORDER = ("model", "device", "threads", "batch_size", "budget", "constraints",
              "finetune_steps", "early_stop_margin", "started", "finished", "artifacts")


def value_text(value: Any) -> str:
    """One value as short text: lists joined by commas, small records as `key value` pairs."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "; ".join(f"{key} {value_text(item)}" for key, item in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(f"({value_text(item)})" if isinstance(item, dict) else value_text(item)
                         for item in value) or "none"
    return str(value)


def _rows(items: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{html.escape(str(key).replace('_', ' '))}</th>"
                   f"<td>{html.escape(value_text(value))}</td></tr>" for key, value in items)


def _dimensions_table(dimensions: list[dict]) -> str:
    head = "<tr><th>dimension</th><th>kind</th><th>channels</th><th>layers</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(str(d.get('name')))}</td><td>{html.escape(str(d.get('kind')))}</td>"
        f"<td>{html.escape(value_text(d.get('channels')))}</td>"
        f"<td>{html.escape(value_text(d.get('layers')))}</td></tr>" for d in dimensions)
    return f"<table class='settings dimensions'>{head}{body}</table>"


def settings_table_html(settings: dict[str, Any]) -> str:
    """HTML for the settings of a study: grouped key/value tables and the dimensions table."""
    def grouped(key: str, value: Any) -> bool:
        return isinstance(value, dict) and key not in _RUN_ORDER

    plain = {k: v for k, v in settings.items() if not grouped(k, v) and k != "dimensions"}
    ordered = [(k, plain.pop(k)) for k in _RUN_ORDER if k in plain] + list(plain.items())
    groups = [("run", ordered)] + [(key, list(value.items())) for key, value in settings.items()
                                   if grouped(key, value) and value]
    parts = [f"<section><h3>{html.escape(name.replace('_', ' '))}</h3>"
             f"<table class='settings'>{_rows(items)}</table></section>"
             for name, items in groups if items]
    dimensions = settings.get("dimensions")
    if isinstance(dimensions, list) and dimensions:
        parts.append(f"<section class='wide'><h3>search dimensions ({len(dimensions)})</h3>"
                     f"{_dimensions_table(dimensions)}</section>")
    return "<div class='settings-groups'>" + "".join(parts) + "</div>"

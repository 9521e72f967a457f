"""Renders the sandbox's counters as a small self-refreshing HTML page for a person."""

from __future__ import annotations

from html import escape
from typing import Any


def _rows(values: dict[str, Any]) -> str:
    return "".join(
        f"<tr><th>{escape(str(key))}</th><td>{escape(_text(value))}</td></tr>"
        for key, value in values.items()
    )


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}: {_text(inner)}" for key, inner in value.items()) or "-"
    if value is None:
        return "-"
    return str(value)


def render_page(stats: dict[str, Any]) -> str:
    """The page of `GET /`: the same numbers as `GET /_stats`, refreshed every 5 seconds."""
    resilience = stats["resilience"]
    verdict = "Good" if resilience["good"] else "Needs attention"
    sections = [
        ("Requests", {"total": stats["requests"]["total"], **stats["requests"]["by_status"]}),
        ("Events", stats["events"]),
        ("Resilience", resilience),
        ("Ad accounts", stats["ad_accounts"]),
        ("Fault injection", stats["faults"]),
    ]
    body = "".join(f"<h2>{title}</h2><table>{_rows(values)}</table>" for title, values in sections)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'><title>capi-stream sandbox</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:2em}"
        "td{font-family:monospace}</style></head><body>"
        "<h1>capi-stream sandbox: a local Pinterest Conversions API</h1>"
        f"<p>Resilience status: <strong>{verdict}</strong></p>{body}"
        "<p>JSON: <a href='/_stats'>/_stats</a>, <a href='/_admin/faults'>/_admin/faults</a>, "
        "<a href='/_admin/events'>/_admin/events</a></p></body></html>"
    )

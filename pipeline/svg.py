"""Inline-SVG charts, drawn the same way for the web page (``GET /datasets/{id}/charts``) and ``refinery report``
from the explorer's figures (``storage.explore``): horizontal bars (funnel, mixes) and histograms with each rule's
threshold. No plotting dependency, no script: each bar or bin carries its documents' filter in ``data-filter``,
which the page turns into a click. Every label is escaped; label space follows the longest label, so none is
cut."""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

PALETTE = {"kept": "#2e7d32", "dropped": "#ef6c00", "quarantined": "#c62828", "bar": "#1565c0",
           "threshold": "#c62828", "all": "#90caf9"}  # fmt: skip
CHAR_WIDTH = 7.2  # px per character of the 12 px labels (system sans-serif averages under this)


def _filter(value: dict[str, Any]) -> str:
    return escape(json.dumps(value, sort_keys=True), quote=True)


def bars(rows: list[dict[str, Any]], chart_id: str = "", width: int = 760, unit: str = "") -> str:
    """Horizontal bars; ``rows``: ``label``, ``value``, ``kind`` (colour) and optionally ``filter``."""
    if not rows:
        return "<p><em>nothing to show</em></p>"
    top = max(r["value"] for r in rows) or 1
    label_w = int(max(len(str(r["label"])) for r in rows) * CHAR_WIDTH) + 12
    row_h, value_w = 22, 90
    width = max(width, label_w + value_w + 200)
    ident = f' id="{escape(chart_id, quote=True)}"' if chart_id else ""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg"{ident} class="chart" width="{width}" '
             f'height="{row_h * len(rows) + 10}" role="img">']  # fmt: skip
    for i, r in enumerate(rows):
        y = 5 + i * row_h
        w = max(1.0, (width - label_w - value_w) * r["value"] / top)
        fill = PALETTE.get(r.get("kind", "bar"), PALETTE["bar"])
        label = escape(str(r["label"]))
        click = f' data-filter="{_filter(r["filter"])}" class="pick"' if "filter" in r else ""
        parts.append(f'<g{click} data-label="{escape(str(r["label"]), quote=True)}">'
                     f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">{label}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{fill}"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12">{r["value"]:,.0f}{unit}</text>'
                     "</g>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def histogram(h: dict[str, Any], width: int = 360) -> str:
    """A histogram of ``storage.explore.Explorer.histogram``: all documents (light) and the kept ones (dark) per
    bin, each rule's threshold as a red line with its name; a bin's filter lists its documents."""
    counts, kept, edges = h["counts"], h["kept"], h["edges"]
    title = f"{h['title']}{' (log scale)' if h['log'] else ''}"
    total = sum(counts)
    if not total:
        return f"<figure><figcaption>{escape(title)}: no values</figcaption></figure>"
    height, pad, top = 150, 24, max(counts)
    lo, hi = edges[0], edges[-1]
    bar_w = (width - 2 * pad) / len(counts)
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height + 30}">'
    parts = [f'<figure data-column="{escape(h["column"], quote=True)}">{svg}']
    for i, (n, k) in enumerate(zip(counts, kept, strict=True)):
        if not n:
            continue
        x = pad + i * bar_w
        tall, short = (height - pad) * n / top, (height - pad) * k / top
        tip = f"{_fmt(edges[i])} to {_fmt(edges[i + 1])}: {n:,} documents, {k:,} kept"
        parts.append(f'<g class="pick" data-filter="{_filter({"column": h["column"], "bin": i})}" data-count="{n}">'
                     f'<title>{escape(tip)}</title>'
                     f'<rect x="{x:.1f}" y="{height - tall:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{tall:.1f}" '
                     f'fill="{PALETTE["all"]}"/>'
                     f'<rect x="{x:.1f}" y="{height - short:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                     f'height="{short:.1f}" fill="{PALETTE["bar"]}"/></g>')  # fmt: skip
    for t in h["thresholds"]:
        value = t["value"]
        if not lo <= value <= hi or hi == lo:
            continue
        position = (_log(value) - _log(lo)) / (_log(hi) - _log(lo)) if h["log"] else (value - lo) / (hi - lo)
        x = pad + position * (width - 2 * pad)
        parts.append(f'<g class="threshold" data-rule="{escape(t["rule"], quote=True)}">'
                     f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad - 8}" y2="{height}" stroke="{PALETTE["threshold"]}" '
                     f'stroke-width="1.5" stroke-dasharray="4 2"/><title>{escape(t["rule"])} = {_fmt(value)}</title>'
                     "</g>")  # fmt: skip
    parts.append(f'<text x="{pad}" y="{height + 16}" font-size="11">{_fmt(lo)}</text>')
    parts.append(f'<text x="{width - pad}" y="{height + 16}" font-size="11" text-anchor="end">{_fmt(hi)}</text>')
    rules = ", ".join(f"{t['rule']} {_fmt(t['value'])}" for t in h["thresholds"])
    caption = f"{escape(title)} (n={total:,}){': ' + escape(rules) if rules else ''}"
    parts.append(f"</svg><figcaption>{caption}</figcaption></figure>")
    return "".join(parts)


def _log(x: float) -> float:
    return math.log1p(x)


def charts(overview: dict[str, Any]) -> dict[str, Any]:
    """Every chart of an explorer overview, as SVG text: what the page inserts and the report embeds."""
    mix = {}
    for name, rows in overview["mix"].items():
        if rows and name == "status":  # kept green, dropped orange, as in the funnel
            rows = [{**r, "kind": "kept" if r["label"] == "kept" else "dropped"} for r in rows]
        if rows:
            mix[name] = bars(rows, f"mix-{name}")
    drawn = [histogram(h) for h in overview["histograms"] if sum(h["counts"])]  # an empty one would break the grid
    return {"funnel": bars(overview["funnel"], "funnel-chart"), "histograms": drawn, "mix": mix}

"""Tiny inline-SVG charts for the HTML report: horizontal bars and histograms, no plotting dependency."""

from __future__ import annotations

from html import escape

import numpy as np

PALETTE = {"kept": "#2e7d32", "dropped": "#ef6c00", "quarantined": "#c62828", "bar": "#1565c0"}


def bars(rows: list[tuple[str, float, str]], width: int = 720, unit: str = "") -> str:
    """Horizontal bar chart; rows are (label, value, colour key)."""
    if not rows:
        return "<p><em>nothing to show</em></p>"
    top = max(v for _, v, _ in rows) or 1
    label_w, row_h = 300, 22
    height = row_h * len(rows) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for i, (label, value, colour) in enumerate(rows):
        y = 5 + i * row_h
        w = max(1.0, (width - label_w - 90) * value / top)
        fill = PALETTE.get(colour, colour)
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">{escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{fill}"/>')
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12">{value:,.0f}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: np.ndarray, title: str, bins: int = 30, log: bool = False, width: int = 340) -> str:
    """A histogram of finite values (log-spaced bins for sizes)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return f"<figure><figcaption>{escape(title)}: no values</figcaption></figure>"
    if log:
        values = values[values > 0]
        if values.size == 0:
            return f"<figure><figcaption>{escape(title)}: no positive values</figcaption></figure>"
        edges = np.logspace(np.log10(values.min()), np.log10(values.max()) + 1e-9, bins + 1)
    else:
        edges = np.linspace(values.min(), values.max() + 1e-9, bins + 1)
    counts, edges = np.histogram(values, bins=edges)
    height, pad = 160, 24
    top = counts.max() or 1
    bar_w = (width - 2 * pad) / bins
    parts = [f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}">']
    for i, c in enumerate(counts):
        h = (height - pad) * c / top
        x = pad + i * bar_w
        parts.append(
            f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" '
            f'fill="{PALETTE["bar"]}"><title>{edges[i]:.3g}–{edges[i + 1]:.3g}: {c}</title></rect>'
        )
    parts.append(f'<text x="{pad}" y="{height + 16}" font-size="11">{edges[0]:.3g}</text>')
    parts.append(f'<text x="{width - pad}" y="{height + 16}" font-size="11" text-anchor="end">{edges[-1]:.3g}</text>')
    parts.append(f"</svg><figcaption>{escape(title)} (n={values.size:,})</figcaption></figure>")
    return "".join(parts)

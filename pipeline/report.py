"""``refinery report OUT``: one self-contained HTML page about a job, with inline SVG charts.

The figures come from the explorer's queries (``storage.explore``, DuckDB over the job's Parquet files, nothing
loaded whole) and the charts from ``pipeline.svg``: the web page's dataset view shows the same charts, drawn by
the same code.
"""

from __future__ import annotations

import json
from html import escape

from pipeline.svg import bars, charts
from storage.catalog import connect
from storage.explore import Explorer, load_settings
from storage.fs import exists, join, read_bytes, write_bytes_atomic

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
    ".grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-size:12px;color:#555;max-width:360px}"
)


def explorer_of(out: str) -> Explorer:
    """The explorer of one output, every input file readable (the CLI reads what its user can)."""
    funnel = json.loads(read_bytes(join(out, "stats", "funnel.json")))
    return Explorer(connect({"out": out}, prefix=False), "", funnel, load_settings(out), lambda _: True)


def build_report(out: str) -> str:
    funnel = json.loads(read_bytes(join(out, "stats", "funnel.json")))
    manifest = json.loads(read_bytes(join(out, "manifest.json"))) if exists(join(out, "manifest.json")) else {}
    overview = explorer_of(out).overview()
    drawn = charts(overview)
    layouts = [f"{n:,} tokens as {escape(fmt)}" for fmt, n in manifest.get("tokens", {}).items()]
    if funnel["sequences"]:
        layouts.append(f"{funnel['sequences']:,} packed sequences ({funnel['padding']:,} padding)")
    sections = [
        f"<h1>Refinery report: {escape(manifest.get('name', out))}</h1>",
        f"<p>{escape(out)} · {funnel['input']:,} input records · {funnel['kept']:,} kept · "
        f"{funnel['tokens']:,} tokens{' · ' if layouts else ''}{' · '.join(layouts)}</p>",
        "<h2>Funnel</h2>",
        drawn["funnel"],
        "<h2>Lengths and quality signals</h2>",
        "<p>Light: every document; dark: the kept ones; dashed red: a rule's threshold.</p>",
        f'<div class="grid">{"".join(drawn["histograms"])}</div>',
    ]
    titles = {"lang": "Languages", "domain": "Domains", "status": "Status of every document"}
    for name, svg in drawn["mix"].items():
        sections += [f"<h2>{titles.get(name, escape(name))}</h2>", svg]
    if manifest.get("mix"):
        rows = [{"label": f"{bucket} ({share['share']:.1%})", "value": share["tokens"], "kind": "bar"}
                for bucket, share in manifest["mix"].items()]  # fmt: skip
        sections += ["<h2>Mix: effective tokens per bucket</h2>", bars(rows, unit=" tok")]
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Refinery report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )


def write_report(out: str, target: str | None = None) -> str:
    target = target or join(out, "report.html")
    write_bytes_atomic(target, build_report(out).encode())
    return target

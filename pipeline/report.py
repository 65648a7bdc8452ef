"""``refinery report OUT``: one self-contained HTML page about a job, with inline SVG charts.

It reads what the job wrote (``stats/funnel.json``, ``manifest.json``, ``docs/``) and draws the funnel, size
and quality-signal histograms, and the language, domain and mix shares.
"""

from __future__ import annotations

import json
from collections import Counter
from html import escape

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.svg import bars, histogram
from storage.fs import exists, join, list_files, read_bytes, write_bytes_atomic

SIGNALS = {
    "n_chars": ("characters per document", True),
    "n_tokens": ("tokens per document", True),
    "q_avg_word_length": ("mean word length (Gopher)", False),
    "q_alpha_words_ratio": ("share of words with a letter (Gopher)", False),
    "q_stop_words": ("stop words present (Gopher)", False),
    "q_dup_line_frac": ("duplicate line fraction (Gopher repetition)", False),
    "q_top_2_gram_frac": ("top 2-gram character fraction", False),
    "q_line_punct_ratio": ("lines ending in punctuation (FineWeb)", False),
    "lang_score": ("language ID confidence", False),
    "dedup_similarity": ("similarity to the kept copy (dedup clusters)", False),
}


def load_docs(out: str) -> pa.Table:
    tables = [pq.read_table(pa.BufferReader(read_bytes(f))) for f in list_files(join(out, "docs"), ".parquet")]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def funnel_rows(funnel: dict) -> list[tuple[str, float, str]]:
    rows = [("input", funnel["input"], "bar"), ("kept", funnel["kept"], "kept")]
    rows += [(f"dropped: {k}", v, "dropped") for k, v in sorted(funnel["dropped"].items(), key=lambda x: -x[1])]
    rows += [(f"quarantined: {k}", v, "quarantined") for k, v in sorted(funnel["quarantined"].items())]
    return rows


def build_report(out: str) -> str:
    funnel = json.loads(read_bytes(join(out, "stats", "funnel.json")))
    manifest = json.loads(read_bytes(join(out, "manifest.json"))) if exists(join(out, "manifest.json")) else {}
    docs = load_docs(out)
    layouts = [f"{n:,} tokens as {escape(fmt)}" for fmt, n in manifest.get("tokens", {}).items()]
    if funnel["sequences"]:
        layouts.append(f"{funnel['sequences']:,} packed sequences ({funnel['padding']:,} padding)")
    sections = [
        f"<h1>Refinery report: {escape(manifest.get('name', out))}</h1>",
        f"<p>{escape(out)} · {funnel['input']:,} input records · {funnel['kept']:,} kept · "
        f"{funnel['tokens']:,} tokens{' · ' if layouts else ''}{' · '.join(layouts)}</p>",
        "<h2>Funnel</h2>",
        bars(funnel_rows(funnel)),
    ]
    figures = []
    for column, (title, log) in SIGNALS.items():
        if column in docs.column_names:
            values = np.asarray(docs.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)
            if np.isfinite(values).any():
                figures.append(histogram(values, title, log=log))
    sections += ["<h2>Lengths and quality signals</h2>", f'<div class="grid">{"".join(figures)}</div>']
    for column, title in (("lang", "Languages"), ("domain", "Domains"), ("status", "Status of every document")):
        if column in docs.column_names:
            counts = Counter(docs.column(column).to_pylist()).most_common(15)
            sections += [f"<h2>{title}</h2>", bars([(str(k), v, "bar") for k, v in counts])]
    if manifest.get("mix"):
        rows = [
            (f"{bucket} ({share['share']:.1%})", share["tokens"], "bar") for bucket, share in manifest["mix"].items()
        ]
        sections += ["<h2>Mix: effective tokens per bucket</h2>", bars(rows, unit=" tok")]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
        ".grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-size:12px;color:#555}"
    )
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Refinery report</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )


def write_report(out: str, target: str | None = None) -> str:
    target = target or join(out, "report.html")
    write_bytes_atomic(target, build_report(out).encode())
    return target

"""What the dataset explorer (the web page) and ``refinery report`` show of a finished job, read with DuckDB from
the views of ``storage.catalog``: the funnel, histograms of the sizes and signals with each rule's threshold,
the language and domain mix, pages of documents behind any bar or bin, one document with its text, one
duplicate cluster.

Every figure is an aggregate DuckDB computes over the Parquet files; nothing loads the docs table whole, so a page
of a 1M-row table costs a scan, not a load. Untrusted values (a reason, a language, a source path) only ever
reach SQL as parameters; column names come from the view's own schema and are checked identifiers.

The text of a dropped document comes from ``OUT/dropped/`` when the job kept it; any other document's text is
read again from its input file (``source``, ``line``), when the caller's policy allows reading that file.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import duckdb

from schemas.spec import InputSpec
from schemas.stages import LanguageConfig, MinHashDedupConfig, QualityConfig
from stages.quality import thresholds as quality_thresholds
from storage.catalog import sql_identifier
from storage.fs import StorageError, confined_to, filesystem, join, read_bytes
from storage.readers import detect_format
from storage.streams import iter_file

BINS = 30
MAX_PAGE = 200
#: Documents of one cluster shown with their text (a cluster of thousands of copies is paged, not read whole).
MAX_CLUSTER_MEMBERS = 50
#: Characters of one document's text in a response (the document view, each cluster member), and of any other
#: string cell of a page: a document may be 64 MB, and a response stays a few MB.
MAX_TEXT_CHARS = 1_000_000
MAX_MEMBER_CHARS = 20_000
MAX_CELL_CHARS = 1_000
#: Sizes are spread over orders of magnitude: their bins are even in log(1 + x).
LOG_COLUMNS = frozenset({"n_chars", "n_tokens", "n_words", "n_lines", "q_words", "q_non_symbol_words",
                         "q_c4_sentences", "q_c4_kept_lines", "q_stop_words"})  # fmt: skip
TITLES = {
    "n_chars": "characters per document",
    "n_tokens": "tokens per document",
    "lang_score": "language ID confidence",
    "q_non_symbol_words": "words (Gopher)",
    "q_avg_word_length": "mean word length (Gopher)",
    "q_alpha_words_ratio": "share of words with a letter (Gopher)",
    "q_stop_words": "stop words present (Gopher)",
    "q_dup_line_frac": "duplicate line fraction (Gopher repetition)",
    "q_top_2_gram_frac": "top 2-gram character fraction (Gopher repetition)",
    "q_c4_sentences": "sentences (C4)",
    "q_line_punct_ratio": "lines ending in punctuation (FineWeb)",
    "q_short_line_ratio": "short lines (FineWeb)",
    "q_char_dup_ratio": "duplicated line characters (FineWeb)",
    "dedup_similarity": "similarity to the kept copy (dedup)",
}
#: Columns never drawn: ids, positions, verdicts.
NOT_SIGNALS = frozenset({"line", "q_value", "partition"})


class ExploreError(ValueError):
    """A request the data cannot answer: an unknown column, a bin without its column."""


class NotFound(ExploreError):
    """A table, document or cluster the dataset does not have."""


@dataclass(frozen=True)
class DocFilter:
    """Which documents a page lists: all of them, or those of a funnel bar, a histogram bin or a mix bar."""

    status: str | None = None  # "kept" or a drop reason (a funnel bar)
    quarantined: str | None = None  # a quarantine reason: rows of the quarantine table instead
    column: str | None = None  # a histogram: its column and bin
    bin: int | None = None
    lang: str | None = None
    domain: str | None = None
    cluster: int | None = None


def _finite(column: str) -> str:
    return f"{column} IS NOT NULL AND isfinite({column}::DOUBLE)"


class Explorer:
    """Queries over one dataset's views (``prefix``: the service names them ``ds_<job>_docs`` and so on).

    ``settings``: the job's ``spec.json`` (thresholds, input fields); ``readable(source)``: whether an input file
    may be opened to show a document's text (the service's data-root policy)."""

    def __init__(
        self, conn: duckdb.DuckDBPyConnection, prefix: str, funnel: dict[str, Any], settings: dict[str, Any] | None,
        readable: Callable[[str], bool], roots: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        self.conn, self.prefix, self.funnel, self.settings = conn, prefix, funnel, settings or {}
        self.readable, self.roots = readable, roots
        views = {r[0] for r in conn.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        self.views = {v[len(prefix) :] for v in views if v.startswith(prefix)}
        self._columns: dict[str, dict[str, str]] = {}
        self._bins: dict[str, tuple[float, float, bool]] = {}
        #: Figures kept across requests by the caller (the service keeps one per finished dataset).
        self.cache: dict[str, Any] = {}

    # -- views and columns -------------------------------------------------------------------------------------

    def view(self, table: str) -> str:
        if table not in self.views:
            raise NotFound(f"this dataset has no {table} table")
        return sql_identifier(self.prefix + table)

    def columns(self, table: str) -> dict[str, str]:
        if table not in self._columns:
            rows = self.conn.execute(f"DESCRIBE SELECT * FROM {self.view(table)}").fetchall()
            self._columns[table] = {r[0]: r[1] for r in rows}
        return self._columns[table]

    def signal_columns(self) -> list[str]:
        """The numeric columns of the docs table worth a histogram, the known ones first."""
        numeric = ("DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER")
        found = [c for c, t in self.columns("docs").items()
                 if t in numeric and c not in NOT_SIGNALS and not re.fullmatch(r"dedup\d*_cluster", c)]  # fmt: skip
        return sorted(found, key=lambda c: (c not in TITLES, list(TITLES).index(c) if c in TITLES else 0, c))

    # -- thresholds from the job's settings --------------------------------------------------------------------

    def thresholds(self) -> dict[str, list[tuple[str, float]]]:
        out: dict[str, list[tuple[str, float]]] = {}
        for stage in self.settings.get("stages", []):
            name = stage.get("stage")
            if name == "quality":
                for column, limits in quality_thresholds(QualityConfig.model_validate(stage)).items():
                    out.setdefault(column, []).extend(limits)
            elif name == "language" and LanguageConfig.model_validate(stage).min_score > 0:
                out.setdefault("lang_score", []).append(("language:low_score", stage["min_score"]))
            elif name == "minhash_dedup":
                threshold = MinHashDedupConfig.model_validate(stage).threshold
                out.setdefault("dedup_similarity", []).append(("minhash_dedup:threshold", threshold))
        return out

    # -- the overview ------------------------------------------------------------------------------------------

    def funnel_rows(self) -> list[dict[str, Any]]:
        f = self.funnel
        rows = [{"label": "input", "value": f["input"], "kind": "bar", "filter": {}},
                {"label": "kept", "value": f["kept"], "kind": "kept", "filter": {"status": "kept"}}]  # fmt: skip
        for reason, n in sorted(f.get("dropped", {}).items(), key=lambda kv: -kv[1]):
            rows.append({"label": f"dropped: {reason}", "value": n, "kind": "dropped", "filter": {"status": reason}})
        for reason, n in sorted(f.get("quarantined", {}).items(), key=lambda kv: -kv[1]):
            rows.append({"label": f"quarantined: {reason}", "value": n, "kind": "quarantined",
                         "filter": {"quarantined": reason}})  # fmt: skip
        return rows

    def _range(self, column: str) -> tuple[float, float, bool]:
        """The column's finite range and whether its bins are logarithmic: every signal column's in one scan,
        cached (a finished dataset does not change)."""
        if column not in self._bins:
            columns = self.signal_columns()
            if column not in columns:
                raise ExploreError(f"no numeric column {column!r} in the docs table")
            parts = []
            for c in map(sql_identifier, columns):
                finite = f"CASE WHEN isfinite({c}::DOUBLE) THEN {c}::DOUBLE END"
                parts += [f"min({finite})", f"max({finite})"]
            values = self.conn.execute(f"SELECT {', '.join(parts)} FROM {self.view('docs')}").fetchone()
            for k, name in enumerate(columns):
                lo, hi = values[2 * k], values[2 * k + 1]
                log = name in LOG_COLUMNS and lo is not None and lo >= 0
                self._bins[name] = (float(lo or 0.0), float(hi or 0.0), log)
        return self._bins[column]

    def _bin_expression(self, column: str) -> tuple[str, list[float]]:
        """SQL for a row's bin of ``column`` and its parameters: the histogram and the page of a bin use the same
        expression, so a bin's count and its page's total agree exactly."""
        lo, hi, log = self._range(column)
        c = sql_identifier(column)
        value = f"ln(1 + {c}::DOUBLE)" if log else f"{c}::DOUBLE"
        a, b = (math.log1p(lo), math.log1p(hi)) if log else (lo, hi)
        width = (b - a) / BINS or 1.0
        return f"least(greatest(floor(({value} - ?) / ?), 0), {BINS - 1})::INTEGER", [a, width]

    def histogram(self, column: str, limits: list[tuple[str, float]]) -> dict[str, Any]:
        lo, hi, log = self._range(column)
        expression, params = self._bin_expression(column)
        c = sql_identifier(column)
        has_status = "status" in self.columns("docs")
        kept = "count(*) FILTER (WHERE status = 'kept')" if has_status else "count(*)"
        rows = self.conn.execute(
            f"SELECT {expression} AS bin, count(*), {kept} FROM {self.view('docs')} WHERE {_finite(c)} GROUP BY bin",
            params,
        ).fetchall()
        counts, kept_counts = [0] * BINS, [0] * BINS
        for b, n, k in rows:
            counts[b], kept_counts[b] = n, k
        a, width = params
        edges = [math.expm1(a + i * width) if log else a + i * width for i in range(BINS + 1)]
        edges[-1] = hi
        if lo == hi:  # one value: every row is in the first bin, and the axis shows that value
            edges = [lo] * (BINS + 1)
        return {"column": column, "title": TITLES.get(column, column), "log": log, "edges": edges, "counts": counts,
                "kept": kept_counts, "thresholds": [{"rule": r, "value": v} for r, v in limits]}  # fmt: skip

    def mix(self, column: str, top: int = 20) -> list[dict[str, Any]]:
        if column not in self.columns("docs"):
            return []
        c = sql_identifier(column)
        rows = self.conn.execute(
            f"SELECT {c}, count(*) AS n FROM {self.view('docs')} GROUP BY 1 ORDER BY n DESC, 1 LIMIT ?", [top]
        ).fetchall()
        return [{"label": str(v), "value": n, "kind": "bar", "filter": {column: v}} for v, n in rows if v is not None]

    def overview(self) -> dict[str, Any]:
        if "overview" not in self.cache:
            self.cache["overview"] = self._overview()
        return self.cache["overview"]

    def _overview(self) -> dict[str, Any]:
        limits = self.thresholds()
        histograms = []
        if "docs" in self.views:
            for column in self.signal_columns():
                histograms.append(self.histogram(column, limits.get(column, [])))
        mixes = {c: self.mix(c) for c in ("lang", "domain", "status")} if "docs" in self.views else {}
        return {"funnel": self.funnel_rows(), "histograms": histograms, "mix": mixes,
                "tables": sorted(self.views)}  # fmt: skip

    # -- pages of documents ------------------------------------------------------------------------------------

    def _where(self, f: DocFilter) -> tuple[str, list[Any]]:
        clauses, params = [], []
        columns = self.columns("docs")
        for name in ("status", "lang", "domain"):
            value = getattr(f, name)
            if value is not None:
                if name not in columns:
                    raise ExploreError(f"the docs table has no {name} column")
                clauses.append(f"{name} = ?")
                params.append(value)
        if f.cluster is not None:
            cluster_columns = [c for c, t in columns.items() if re.fullmatch(r"dedup\d*_cluster", c) and t == "BIGINT"]
            if not cluster_columns:
                raise ExploreError("this dataset has no dedup clusters")
            clauses.append("(" + " OR ".join(f"{sql_identifier(c)} = ?" for c in cluster_columns) + ")")
            params += [f.cluster] * len(cluster_columns)
        if f.column is not None or f.bin is not None:
            if f.column is None or f.bin is None or not 0 <= f.bin < BINS:
                raise ExploreError(f"a histogram bin needs a column and a bin from 0 to {BINS - 1}")
            expression, bin_params = self._bin_expression(f.column)
            clauses.append(f"{_finite(sql_identifier(f.column))} AND {expression} = ?")
            params += [*bin_params, f.bin]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def documents(self, f: DocFilter, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """One page of the documents behind ``f``, in file order (Parquet files in name order, rows in order:
        DuckDB keeps that order without a sort), with the total."""
        limit = max(1, min(limit, MAX_PAGE))
        if f.quarantined is not None:
            table, where, params = self.view("quarantine"), " WHERE reason = ?", [f.quarantined]
        else:
            table = self.view("docs")
            where, params = self._where(f)
        total = self.conn.execute(f"SELECT count(*) FROM {table}{where}", params).fetchone()[0]
        cursor = self.conn.execute(f"SELECT * FROM {table}{where} LIMIT ? OFFSET ?", [*params, limit, max(offset, 0)])
        columns = [d[0] for d in cursor.description]
        rows = [dict(zip(columns, _plain(r, MAX_CELL_CHARS), strict=True)) for r in cursor.fetchall()]
        return {"total": total, "offset": offset, "limit": limit, "columns": columns, "rows": rows}

    # -- one document, one cluster -----------------------------------------------------------------------------

    def document(self, source: str, line: int) -> dict[str, Any]:
        cursor = self.conn.execute(f"SELECT * FROM {self.view('docs')} WHERE source = ? AND line = ? LIMIT 1",
                                   [source, line])  # fmt: skip
        found = cursor.fetchone()
        if found is None:
            raise NotFound(f"no document {source}:{line} in this dataset")
        row = dict(zip([d[0] for d in cursor.description], _plain(found, MAX_CELL_CHARS), strict=True))
        text, origin = self.texts([(source, line, row.get("id"))]).get((source, line), (None, None))
        cut = text is not None and len(text) > MAX_TEXT_CHARS
        note = self.rewrites() if origin == "input" and row.get("status") == "kept" else None
        return {"document": row, "text": text[:MAX_TEXT_CHARS] if cut else text, "text_from": origin,
                "text_truncated": cut, "text_note": note}  # fmt: skip

    def rewrites(self) -> str | None:
        """How the job changed a kept document's text, if its stages did: the text read again from the input is
        then not the text measured (``n_chars``) and tokenised."""
        changes = []
        for stage in self.settings.get("stages", []):
            if stage.get("stage") == "quality":
                config = QualityConfig.model_validate(stage)
                if config.drop and config.c4.enabled and config.c4.rewrite_text:
                    changes.append("C4 kept only the lines it accepts")
            elif stage.get("stage") == "tags" and stage.get("redact_pii"):
                changes.append("PII was redacted")
        if not changes:
            return None
        return f"the input as read; the job changed this text ({', '.join(changes)}), so the shards hold another"

    def cluster(self, cluster: int) -> dict[str, Any]:
        cursor = self.conn.execute(
            f"SELECT * FROM {self.view('clusters')} WHERE cluster = ? "
            "ORDER BY kept DESC, similarity DESC, source, line LIMIT ?", [cluster, MAX_CLUSTER_MEMBERS],
        )  # fmt: skip
        columns = [d[0] for d in cursor.description]
        members = [dict(zip(columns, _plain(r, MAX_CELL_CHARS), strict=True)) for r in cursor.fetchall()]
        if not members:
            raise NotFound(f"no duplicate cluster {cluster}")
        query = f"SELECT count(*) FROM {self.view('clusters')} WHERE cluster = ?"
        size = self.conn.execute(query, [cluster]).fetchone()[0]
        texts = self.texts([(m["source"], m["line"], m["id"]) for m in members])
        for m in members:
            text, m["text_from"] = texts.get((m["source"], m["line"]), (None, None))
            m["text_truncated"] = text is not None and len(text) > MAX_MEMBER_CHARS
            m["text"] = text[:MAX_MEMBER_CHARS] if m["text_truncated"] else text
        return {"cluster": cluster, "size": size, "members": members}

    def texts(self, wanted: list[tuple[str, int, str | None]]) -> dict[tuple[str, int], tuple[str | None, str]]:
        """The text of each ``(source, line, id)``: from ``OUT/dropped/`` if kept there, else read again from the
        input (one pass over each file for all its lines), else None and why."""
        out: dict[tuple[str, int], tuple[str | None, str]] = {}
        if "dropped" in self.views and wanted:
            for source, line in {(s, n) for s, n, _ in wanted}:
                hit = self.conn.execute(
                    f"SELECT text FROM {self.view('dropped')} WHERE source = ? AND line = ? LIMIT 1", [source, line]
                ).fetchone()
                if hit is not None:
                    out[(source, line)] = (hit[0], "dropped")
        by_source: dict[str, dict[int, str | None]] = {}
        for source, line, doc_id in wanted:
            if (source, line) not in out:
                by_source.setdefault(source, {})[line] = doc_id
        for source, lines in by_source.items():
            if not self.readable(source):
                out.update({(source, n): (None, "the input file is outside the data roots") for n in lines})
                continue
            try:
                with confined_to(self.roots):  # the check is made on the opened file (a link may be swapped in)
                    found = read_records(source, lines, self.input_settings(source), self.roots)
            except (StorageError, OSError, ValueError) as error:
                out.update({(source, n): (None, f"the input cannot be read: {error}") for n in lines})
                continue
            for n, doc_id in lines.items():
                if n not in found:
                    out[(source, n)] = (None, "the input no longer holds this line")
                elif doc_id is not None and found[n][0] != doc_id:
                    out[(source, n)] = (None, "the input changed since the job (another id at this line)")
                else:
                    out[(source, n)] = (found[n][1], "input")
        return out

    def input_settings(self, source: str) -> InputSpec:
        fields = {k: v for k, v in self.settings.get("input", {}).items() if k in InputSpec.model_fields}
        return InputSpec.model_validate({**fields, "url": source})


def read_records(source: str, lines: Iterable[int], cfg: InputSpec, roots: tuple[str, ...]) -> dict[int, tuple]:
    """``{line: (id, text)}`` of the wanted records of one input file, read as the job read it (the same readers,
    so the same numbering), stopping after the last wanted line."""
    wanted = set(lines)
    size = filesystem(source)[0].size(filesystem(source)[1]) if "://" in source else _local_size(source)
    fmt = detect_format(source, cfg.format)
    found: dict[int, tuple] = {}
    for batch in iter_file(source, fmt, size, cfg, cfg.batch_bytes, roots):
        unreadable = [r for r in batch.quarantine.to_pylist() if r["reason"] == "unreadable_file"]
        if unreadable:  # refused by the data roots, or gone: say why rather than "no such line"
            raise StorageError(unreadable[0]["detail"])
        docs = batch.documents
        numbers = docs.column("line").to_pylist()
        for k, n in enumerate(numbers):
            if n in wanted:
                found[n] = (docs.column("id")[k].as_py(), docs.column("text")[k].as_py())
        if len(found) == len(wanted) or (numbers and numbers[-1] >= max(wanted)):
            break
    return found


def _local_size(path: str) -> int:
    return os.stat(path).st_size


def _cell(value: Any, max_chars: int) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN; an unmeasured signal is NaN
    if not isinstance(value, int | str | bool | type(None)):
        value = str(value)
    return value[:max_chars] + "…" if isinstance(value, str) and len(value) > max_chars else value


def _plain(row: tuple, max_chars: int) -> list[Any]:
    """Cells as JSON can carry them (lists of ids, dates and the like as text), long text cut."""
    return [_cell(v, max_chars) for v in row]


def load_settings(out: str) -> dict[str, Any] | None:
    try:
        return json.loads(read_bytes(join(out, "spec.json"), real=True))
    except (StorageError, ValueError):
        return None

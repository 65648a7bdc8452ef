"""DuckDB over job outputs: one view per table a job writes, queried read-only inside a sandbox.

Views: ``docs``, ``quarantine``, ``manifest``, ``clusters``, ``rl`` and ``shards`` (the Parquet token shards, with
each row's ``shard`` name) for one output (``refinery sql OUT``), or ``<dataset>_docs`` and so on for several (the
service). ``decode_tokens(ids)`` turns a list of token ids back into text with the DeepSeek tokenizer.

Outputs on the local disk or on an object store (``s3://bucket/prefix``, read through the same fsspec filesystem
the jobs write with, credentials from the environment). The connection may read only the registered outputs
(``allowed_directories``: local directories or URL prefixes, each ending in "/"), external access is otherwise
off, spilling to disk is off and the configuration locked; only a single SELECT statement (as DuckDB's own parser
types it) runs, with a row, a byte and a time limit. No untrusted text is pasted into SQL: file names become
quoted literals that cannot close their quote, view names are checked identifiers, and a dataset whose views
cannot be built is left out alone.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import tokenizers

from stages.tokenize import tokenizer_path
from storage.fs import filesystem

log = logging.getLogger(__name__)

TABLES = {
    "docs": "docs/*.parquet",
    "quarantine": "quarantine/*.parquet",
    "manifest": "manifest.parquet",
    "clusters": "dedup/clusters.parquet",
    "rl": "rl/*.parquet",
    "shards": "shards/*.parquet",
    "dropped": "dropped/*.parquet",
}
#: What each view selects from its files: a shard's rows carry the shard's name, as the manifest spells it.
SELECTS = {"shards": "* EXCLUDE (filename), parse_filename(filename, true) AS shard"}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: Token ids decode_tokens takes in one call (DuckDB calls it per vector of 2,048 rows): about 0.2 s and 130 MB of
#: text at worst, so the query's time limit can stop it between calls (16M ids a call ran 37 s and took 6.9 GB).
MAX_DECODE_IDS = 1 << 20
GLOB_CHARS = frozenset("*?[")
FETCH_ROWS = 64  # rows fetched at a time while the byte budget is counted


class SqlRefused(ValueError):
    """The statement is not one read-only SELECT, or it touched something outside the sandbox."""


class SqlTimeout(TimeoutError):
    pass


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[object]]
    truncated: bool
    truncated_by: str | None = None  # "rows" or "bytes"


def sql_string(value: str) -> str:
    """A SQL string literal of ``value``: quotes doubled, so the text can never end the literal early."""
    if "\x00" in value:
        raise ValueError(f"{value!r} holds a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    if not IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain identifier")
    return name


def view_name(dataset: str, table: str, prefix: bool) -> str:
    return sql_identifier(re.sub(r"\W", "_", dataset) + f"_{table}" if prefix else table)


def _local_files(root: str, pattern: str) -> list[str]:
    # only real files of the dataset: a planted link to a file elsewhere is skipped (views are built before the
    # sandbox is locked, so DuckDB would still read its schema)
    base = Path(root)
    return sorted(str(p) for p in base.glob(pattern) if p.is_file() and p.resolve().is_relative_to(base))


def _remote_files(fs: fsspec.AbstractFileSystem, root: str, pattern: str) -> list[str]:
    return sorted(fs.unstrip_protocol(p) for p in fs.glob(f"{root.split('://', 1)[1]}/{pattern}"))


def _create_views(conn: duckdb.DuckDBPyConnection, name: str, root: str, prefix: bool) -> None:
    remote = filesystem(root)[0] if "://" in root else None
    for table, pattern in TABLES.items():
        files = _remote_files(remote, root, pattern) if remote is not None else _local_files(root, pattern)
        literal = [f for f in files if not GLOB_CHARS & set(f)]
        if len(literal) < len(files):  # DuckDB would read such a name as a pattern: other files, or none
            log.warning("dataset %s: %d file(s) with * ? or [ in their path left out of %s",
                        name, len(files) - len(literal), table)  # fmt: skip
        files = literal
        if files:
            sources = ", ".join(sql_string(f) for f in files)
            columns, extra = (SELECTS[table], ", filename=true") if table in SELECTS else ("*", "")
            conn.execute(
                f"CREATE VIEW {view_name(name, table, prefix)} AS "
                f"SELECT {columns} FROM read_parquet([{sources}], union_by_name=true{extra})"
            )


def dataset_root(location: str) -> str:
    """A dataset's location as the sandbox names it: a resolved local directory, or a URL without its last "/"."""
    return location.rstrip("/") if "://" in location else str(Path(location).resolve())


def connect(datasets: dict[str, str], prefix: bool = True, memory_limit: str = "2GB") -> duckdb.DuckDBPyConnection:
    """A sandboxed in-memory DuckDB with views over each dataset's output (a local directory or an fsspec URL).

    A dataset whose views fail (a damaged file, an unreachable bucket) is skipped and logged; the others stay
    queryable."""
    conn = duckdb.connect(":memory:")
    conn.create_function("decode_tokens", _decode_tokens, [duckdb.list_type("INTEGER")], "VARCHAR", type="arrow")
    allowed, registered = [], set()
    for name, location in datasets.items():
        root = dataset_root(location)
        try:
            if "://" in root:
                fs = filesystem(root)[0]
                protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
                if protocol not in registered:  # DuckDB reads these URLs through the jobs' own fsspec filesystem
                    conn.register_filesystem(fs)
                    registered.add(protocol)
            _create_views(conn, name, root, prefix)
        except (duckdb.Error, ValueError, OSError) as error:
            log.warning("dataset %s (%s) left out of the SQL catalog: %s", name, root, str(error).splitlines()[0])
            continue
        allowed.append(sql_string(f"{root}/"))
    conn.execute(f"SET memory_limit={sql_string(memory_limit)}")
    conn.execute("SET temp_directory=''")  # no spill files, whose directory DuckDB would make readable
    conn.execute(f"SET allowed_directories=[{', '.join(allowed)}]")
    conn.execute("SET enable_external_access=false")
    conn.execute("SET lock_configuration=true")
    return conn


@functools.cache
def _tokenizer() -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(tokenizer_path("deepseek-v3"))


def _decode_tokens(ids: pa.Array) -> pa.Array:
    """``decode_tokens(input_ids)`` in SQL: the text of token ids, special tokens kept (as the shard page shows
    them); NULL stays NULL, an id outside the vocabulary is an error that names it."""
    total = pc.sum(pc.list_value_length(ids)).as_py() or 0
    if total > MAX_DECODE_IDS:  # the Python side has no memory limit of DuckDB's: bounded here
        raise ValueError(f"decode_tokens: {total:,} ids in one batch of rows; at most {MAX_DECODE_IDS:,}")
    size = _tokenizer().get_vocab_size(with_added_tokens=True)
    values = pc.list_flatten(ids)  # every id of every row, in order; checked as one array
    outside = pc.or_kleene(pc.is_null(values), pc.or_(pc.less(values, 0), pc.greater_equal(values, size)))
    if pc.any(pc.fill_null(outside, True)).as_py():
        bad = values.filter(pc.fill_null(outside, True))[0].as_py()
        raise ValueError(f"decode_tokens: {bad} is not a token id of the DeepSeek tokenizer (0 to {size - 1})")
    lists = ids.to_pylist()
    present = [row for row in lists if row is not None]
    texts = iter(_tokenizer().decode_batch(present, skip_special_tokens=False) if present else [])
    return pa.array([None if row is None else next(texts) for row in lists], pa.string())


def _cell_bytes(value: object) -> int:
    if isinstance(value, str | bytes):
        return len(value) + 8
    if isinstance(value, list | tuple | dict):
        return len(str(value)) + 8
    return 16


def run_sql(
    conn: duckdb.DuckDBPyConnection, sql: str, limit: int = 1000, timeout: float = 10.0, max_bytes: int = 32 * 2**20
) -> QueryResult:
    try:
        statements = conn.extract_statements(sql)
    except duckdb.Error as error:
        raise SqlRefused(f"cannot parse the query: {str(error).splitlines()[0]}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise SqlRefused("only one read-only SELECT statement is allowed")
    timer = threading.Timer(timeout, conn.interrupt)
    timer.start()
    rows: list[list[object]] = []
    size, truncated_by = 0, None
    try:
        cursor = conn.execute(sql)
        columns = [d[0] for d in cursor.description]
        while truncated_by is None:
            chunk = cursor.fetchmany(FETCH_ROWS)
            if not chunk:
                break
            for row in chunk:
                if len(rows) == limit:
                    truncated_by = "rows"
                    break
                size += sum(_cell_bytes(v) for v in row)
                if size > max_bytes:
                    truncated_by = "bytes"
                    break
                rows.append(list(row))
    except duckdb.InterruptException:
        raise SqlTimeout(f"the query ran longer than {timeout:g} s") from None
    except duckdb.Error as error:
        raise SqlRefused(str(error).split("\n")[0]) from None
    finally:
        timer.cancel()
    return QueryResult(columns, rows, truncated_by is not None, truncated_by)

"""DuckDB over job outputs: one view per table a job writes, queried read-only inside a sandbox.

Views: ``docs``, ``quarantine``, ``manifest``, ``clusters``, ``rl`` for one output (``refinery sql OUT``), or
``<dataset>_docs`` and so on for several (the service). The connection may read only the registered output
directories (``allowed_directories``), external access is otherwise off, spilling to disk is off and the
configuration locked; only a single SELECT statement (as DuckDB's own parser types it) runs, with a row, a byte and
a time limit. No untrusted text is pasted into SQL: file names become quoted literals that cannot close their
quote, view names are checked identifiers, and a dataset whose views cannot be built is left out alone.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

TABLES = {
    "docs": "docs/*.parquet",
    "quarantine": "quarantine/*.parquet",
    "manifest": "manifest.parquet",
    "clusters": "dedup/clusters.parquet",
    "rl": "rl/*.parquet",
}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
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


def _create_views(conn: duckdb.DuckDBPyConnection, name: str, root: Path, prefix: bool) -> None:
    for table, pattern in TABLES.items():
        # only real files of the dataset: a planted link to a file elsewhere is skipped (views are built before
        # the sandbox is locked, so DuckDB would still read its schema)
        files = sorted(str(p) for p in root.glob(pattern) if p.is_file() and p.resolve().is_relative_to(root))
        if files:
            sources = ", ".join(sql_string(f) for f in files)
            conn.execute(
                f"CREATE VIEW {view_name(name, table, prefix)} AS "
                f"SELECT * FROM read_parquet([{sources}], union_by_name=true)"
            )


def connect(datasets: dict[str, str], prefix: bool = True, memory_limit: str = "2GB") -> duckdb.DuckDBPyConnection:
    """A sandboxed in-memory DuckDB with views over each dataset's local output directory.

    A dataset whose views fail (a damaged file) is skipped and logged; the others stay queryable."""
    conn = duckdb.connect(":memory:")
    allowed = []
    for name, path in datasets.items():
        root = Path(path).resolve()
        try:
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

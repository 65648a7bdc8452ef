"""DuckDB over job outputs: one view per table a job writes, queried read-only inside a sandbox.

Views: ``docs``, ``quarantine``, ``manifest``, ``clusters`` for one output (``refinery sql OUT``), or
``<dataset>_docs`` and so on for several (the service). The connection may read only the registered output
directories (``allowed_directories``), external access is otherwise off and the configuration locked; only a
single SELECT statement runs, with a row limit and a time limit.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb

TABLES = {
    "docs": "docs/*.parquet",
    "quarantine": "quarantine/*.parquet",
    "manifest": "manifest.parquet",
    "clusters": "dedup/clusters.parquet",
    "rl": "rl/*.parquet",
}


class SqlRefused(ValueError):
    """The statement is not one read-only SELECT, or it touched something outside the sandbox."""


class SqlTimeout(TimeoutError):
    pass


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[object]]
    truncated: bool


def _name(dataset: str) -> str:
    return re.sub(r"\W", "_", dataset)


def connect(datasets: dict[str, str], prefix: bool = True) -> duckdb.DuckDBPyConnection:
    """A sandboxed in-memory DuckDB with views over each dataset's local output directory."""
    conn = duckdb.connect(":memory:")
    roots = {name: str(Path(path).resolve()) for name, path in datasets.items()}
    for name, root in roots.items():
        for table, pattern in TABLES.items():
            if list(Path(root).glob(pattern)):
                view = f"{_name(name)}_{table}" if prefix else table
                conn.execute(
                    f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{root}/{pattern}', union_by_name=true)"
                )
    allowed = ", ".join(f"'{root}/'" for root in roots.values())
    conn.execute(f"SET allowed_directories=[{allowed}]")
    conn.execute("SET enable_external_access=false")
    conn.execute("SET lock_configuration=true")
    return conn


def run_sql(conn: duckdb.DuckDBPyConnection, sql: str, limit: int = 1000, timeout: float = 10.0) -> QueryResult:
    try:
        statements = conn.extract_statements(sql)
    except duckdb.Error as error:
        raise SqlRefused(f"cannot parse the query: {error}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise SqlRefused("only one read-only SELECT statement is allowed")
    if re.search(r"(?i)\b(pragma|attach|copy|install|load|export|import|checkpoint)\b", sql):
        raise SqlRefused("PRAGMA, ATTACH, COPY, INSTALL/LOAD, EXPORT/IMPORT are not allowed")
    timer = threading.Timer(timeout, conn.interrupt)
    timer.start()
    try:
        cursor = conn.execute(sql)
        rows = cursor.fetchmany(limit + 1)
        columns = [d[0] for d in cursor.description]
    except duckdb.InterruptException:
        raise SqlTimeout(f"the query ran longer than {timeout:g} s") from None
    except duckdb.PermissionException as error:
        raise SqlRefused(str(error).split("\n")[0]) from None
    except duckdb.Error as error:
        raise SqlRefused(str(error).split("\n")[0]) from None
    finally:
        timer.cancel()
    return QueryResult(columns, [list(r) for r in rows[:limit]], len(rows) > limit)

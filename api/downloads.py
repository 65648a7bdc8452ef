"""A SQL result as a file to download: CSV (every cell as text) or Parquet (types as Arrow infers them)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET = "application/vnd.apache.parquet"


#: A cell a spreadsheet would read as a formula (text from a corpus: "=HYPERLINK(...)") gets a leading quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(cell: Any) -> Any:
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell


def result_csv(result: dict[str, Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([_inert(c) for c in result["columns"]])
    writer.writerows([_inert(c) for c in row] for row in result["rows"])
    return out.getvalue().encode()


def result_parquet(result: dict[str, Any]) -> bytes:
    """A column whose cells Arrow cannot type together (an int beside a text) is written as text."""
    arrays = []
    for k in range(len(result["columns"])):
        cells = [row[k] for row in result["rows"]]
        try:
            arrays.append(pa.array(cells))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # a HUGEINT beyond int64, mixed types
            arrays.append(pa.array([None if c is None else str(c) for c in cells], pa.string()))
    names: list[str] = []
    for name in result["columns"]:  # SELECT 1 AS a, 2 AS a: Parquet readers need distinct names
        unique, k = name, 0
        while unique in names:
            k += 1
            unique = f"{name}_{k}"
        names.append(unique)
    sink = io.BytesIO()
    pq.write_table(pa.table(arrays, names=names), sink, compression="zstd")
    return sink.getvalue()

"""A SQL result as a file to download: CSV (every cell as text) or Parquet (types as Arrow infers them)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET = "application/vnd.apache.parquet"


def result_csv(result: dict[str, Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(result["columns"])
    writer.writerows(result["rows"])
    return out.getvalue().encode()


def result_parquet(result: dict[str, Any]) -> bytes:
    """A column whose cells Arrow cannot type together (an int beside a text) is written as text."""
    arrays = []
    for k in range(len(result["columns"])):
        cells = [row[k] for row in result["rows"]]
        try:
            arrays.append(pa.array(cells))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.array([None if c is None else str(c) for c in cells], pa.string()))
    names = list(result["columns"])
    if len(set(names)) < len(names):  # SELECT 1 AS a, 2 AS a: Parquet needs distinct names
        names = [f"{n}_{k}" if names.count(n) > 1 else n for k, n in enumerate(names)]
    sink = io.BytesIO()
    pq.write_table(pa.table(arrays, names=names), sink, compression="zstd")
    return sink.getvalue()

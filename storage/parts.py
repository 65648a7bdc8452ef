"""Parquet part files: one per batch while a split is processed, merged into one file per split at the end.

A batch's part is written whole and atomically, so a task killed mid-split leaves complete parts only. Parts of
one split may differ in columns (a batch whose documents were all dropped by the first stage has none of the later
stages' tags): the merge unifies their schemas, filling missing columns with nulls, and streams one part at a time.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from storage.fs import check_real_location, filesystem, join, open_input, write_bytes_atomic


def parquet_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    """Deterministic Parquet bytes (no timestamps in the metadata), zstd-compressed unless told otherwise."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression)
    return sink.getvalue().to_pybytes()


def part_url(directory: str, kind: str, number: int) -> str:
    return join(directory, f"{kind}-{number:05d}.parquet")


def write_part(url: str, table: pa.Table, compression: str = "zstd") -> None:
    write_bytes_atomic(url, parquet_bytes(table, compression))


def read_part(url: str) -> pa.Table:
    with open_input(url, real=True) as handle:
        return pq.read_table(handle)


def iter_parts(urls: list[str]) -> Iterator[pa.Table]:
    for url in urls:
        yield read_part(url)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.table(columns, schema=schema)


def merge_parts(urls: list[str], dest: str, empty: pa.Schema) -> int:
    """Concatenate part files into ``dest`` (atomically, one part in memory at a time); ``empty`` is the schema
    written when there is no part. Returns the number of rows."""
    schemas = []
    for url in urls:
        with open_input(url, real=True) as handle:
            schemas.append(pq.read_schema(handle))
    schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else empty
    schema = schema.remove_metadata()
    fs, path = filesystem(dest)
    directory = posixpath.dirname(path)
    check_real_location(directory)
    fs.makedirs(directory, exist_ok=True)
    tmp = f"{directory}/.tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}"
    rows = 0
    with fs.open(tmp, "wb") as handle, pq.ParquetWriter(handle, schema, compression="zstd") as writer:
        for table in iter_parts(urls):
            writer.write_table(_conform(table, schema))
            rows += table.num_rows
        if not urls:
            writer.write_table(schema.empty_table())
    fs.mv(tmp, path)
    return rows

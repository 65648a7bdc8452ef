"""Commit a job's records: funnel, manifest (JSON for people, Parquet for DuckDB) and ``_SUCCESS`` last."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import Manifest
from storage.fs import join, write_bytes_atomic

MANIFEST_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("partition", pa.int64()),
        ("sequences", pa.int64()),
        ("tokens", pa.int64()),
        ("padding", pa.int64()),
        ("documents", pa.int64()),
        ("files", pa.list_(pa.string())),
        ("sha256", pa.list_(pa.string())),
    ]
)


def write_manifest(out: str, manifest: Manifest) -> None:
    write_bytes_atomic(join(out, "stats", "funnel.json"), manifest.funnel.model_dump_json(indent=1).encode())
    write_bytes_atomic(join(out, "manifest.json"), manifest.model_dump_json(indent=1).encode())
    rows = [
        {**s.model_dump(exclude={"files"}), "files": list(s.files), "sha256": list(s.files.values())}
        for s in manifest.shards
    ]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), sink)
    write_bytes_atomic(join(out, "manifest.parquet"), sink.getvalue().to_pybytes())
    write_bytes_atomic(join(out, "_SUCCESS"), b"")

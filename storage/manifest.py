"""Commit a job's records: funnel, manifest (JSON for people, Parquet for DuckDB) and ``_SUCCESS`` last."""

from __future__ import annotations

import posixpath
import re
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.manifest import Manifest
from schemas.spec import PACKED_FORMATS
from storage.fs import check_real_location, filesystem, join, open_input, write_bytes_atomic

MANIFEST_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        #: ``packed`` (OUT/shards/: parquet, megatron_packed) or ``documents`` (OUT/megatron/, OUT/datatrove/)
        ("layout", pa.string()),
        ("format", pa.string()),
        ("bucket", pa.string()),
        ("partition", pa.int64()),
        ("sequences", pa.int64()),
        ("tokens", pa.int64()),
        ("padding", pa.int64()),
        ("documents", pa.int64()),
        ("files", pa.list_(pa.string())),
        ("xxh128", pa.list_(pa.string())),
    ]
)


def write_manifest(out: str, manifest: Manifest) -> None:
    write_bytes_atomic(join(out, "stats", "funnel.json"), manifest.funnel.model_dump_json(indent=1).encode())
    write_bytes_atomic(join(out, "manifest.json"), manifest.model_dump_json(indent=1).encode())
    packed = "+".join(f for f in manifest.shard_formats if f in PACKED_FORMATS)
    rows = [
        {**s.model_dump(exclude={"files"}), "layout": "packed", "format": packed, "bucket": None,
         "files": list(s.files), "xxh128": list(s.files.values())}
        for s in manifest.shards
    ] + [
        {"shard": d.prefix, "layout": "documents", "format": d.format, "bucket": d.bucket, "partition": d.partition,
         "sequences": d.documents, "tokens": d.tokens, "padding": 0, "documents": d.documents,
         "files": list(d.files), "xxh128": list(d.files.values())}
        for d in manifest.documents
    ]  # fmt: skip
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), sink)
    write_bytes_atomic(join(out, "manifest.parquet"), sink.getvalue().to_pybytes())
    write_bytes_atomic(join(out, "_SUCCESS"), b"")


CLUSTER_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("cluster", pa.int64()),
        ("kept_id", pa.string()),
        ("kept", pa.bool_()),
        ("similarity", pa.float32()),
        ("status", pa.string()),
        ("source", pa.string()),
        ("line", pa.int64()),
        ("partition", pa.int64()),
        ("step", pa.string()),
    ]
)


def _cluster_rows(docs: pa.Table, step: str, partition: int) -> pa.Table:
    """The documents of one partition that are in a cluster of the global step ``step`` (``dedup``, ``dedup2``)."""
    docs = docs.filter(pc.is_valid(docs.column(f"{step}_cluster")))
    status = docs.column("status")
    dropped = pc.and_(
        pc.is_in(status, value_set=pa.array(["exact_duplicate", "near_duplicate"])),
        pc.equal(docs.column("stage"), step),
    )
    n = docs.num_rows
    return pa.table(
        {
            "id": docs.column("id"),
            "cluster": docs.column(f"{step}_cluster"),
            "kept_id": docs.column(f"{step}_kept_id"),
            "kept": pc.invert(pc.fill_null(dropped, False)),
            "similarity": docs.column(f"{step}_similarity"),
            "status": status,
            "source": docs.column("source"),
            "line": docs.column("line"),
            "partition": pa.array([partition] * n, pa.int64()),
            "step": pa.array([step] * n, pa.string()),
        },
        schema=CLUSTER_SCHEMA,
    )


def write_cluster_table(out: str, partitions: list[int]) -> None:
    """``OUT/dedup/clusters.parquet``: every document in a duplicate cluster of each global step, streamed one
    partition at a time from ``OUT/docs/``. ``cluster`` is the order key of the kept (earliest) document and
    ``kept_id`` its id, on every row."""
    fs, path = filesystem(join(out, "dedup", "clusters.parquet"))
    check_real_location(posixpath.dirname(path))
    tmp = f"{posixpath.dirname(path)}/.tmp-{uuid.uuid4().hex}-clusters.parquet"  # a name nobody can plant ahead
    with fs.open(tmp, "wb") as handle, pq.ParquetWriter(handle, CLUSTER_SCHEMA) as writer:
        for partition in partitions:  # a row group at a time: a partition's docs file may be large
            part = join(out, "docs", f"part-{partition:05d}.parquet")
            with open_input(part, real=True) as handle:
                docs_file = pq.ParquetFile(handle)
                names = docs_file.schema_arrow.names
                steps = sorted(c[: -len("_cluster")] for c in names if re.fullmatch(r"dedup\d*_cluster", c))
                wanted = ["id", "source", "line", "status", "stage"]
                wanted += [f"{s}_{kind}" for s in steps for kind in ("cluster", "similarity", "kept_id")]
                for batch in docs_file.iter_batches(columns=wanted):
                    docs = pa.Table.from_batches([batch])
                    for step in steps:
                        writer.write_table(_cluster_rows(docs, step, partition))
    fs.mv(tmp, path)

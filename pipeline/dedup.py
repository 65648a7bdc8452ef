"""Global deduplication on Dask: keys per partition, shuffles by hash and by LSH bucket, clusters.

Nothing is collected on the driver. Exact hashes and LSH band keys are shuffled between workers by Dask's
DataFrame shuffle, which turns them into candidate edges (a few per duplicate, none per unique document). Each
partition's task then hands over the signatures of its candidate documents only, and one worker task verifies
the pairs, finds the connected components and writes one decisions file per input partition, which the
partition tasks apply.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dask import delayed
from distributed import Client

from pipeline.partition import PartitionPlan, before_dedup
from pipeline.waiting import gather_cancellable
from schemas.spec import WorkflowSpec
from schemas.stages import MinHashDedupConfig
from stages.dedup import (
    EDGE_COLUMNS,
    band_rows,
    bucket_edges,
    decide,
    exact_edges,
    exact_keys,
    minhash_keys,
    order_keys,
    unpack_signatures,
)
from storage.dedup_index import commit_index, index_parts, part_name, write_index_part
from storage.fs import exists, join, read_bytes, write_bytes_atomic

EXACT_META = pd.DataFrame({"high": pd.Series(dtype="uint64"), "low": pd.Series(dtype="uint64"),
                           "order": pd.Series(dtype="int64")})  # fmt: skip
BANDS_META = pd.DataFrame({"bucket": pd.Series(dtype="uint64"), "order": pd.Series(dtype="int64")})
SIGS_META = pd.DataFrame({"order": pd.Series(dtype="int64"), "sig": pd.Series(dtype="object")})
EDGES_META = pd.DataFrame({k: pd.Series(dtype=v) for k, v in EDGE_COLUMNS.items()})
CLUSTERS_META = pd.DataFrame(
    {"order": pd.Series(dtype="int64"), "cluster": pd.Series(dtype="int64"), "reason": pd.Series(dtype="object")}
)
DECISIONS_SCHEMA = pa.schema(
    [("order", pa.int64()), ("cluster", pa.int64()), ("reason", pa.string()), ("similarity", pa.float32())]
)


def decisions_url(spec: WorkflowSpec, partition: int) -> str:
    return join(spec.output.url, "dedup", "_decisions", f"part-{partition:05d}.parquet")


def partition_keys(plan: PartitionPlan, spec: WorkflowSpec) -> dict[str, pd.DataFrame]:
    """Dedup keys of one partition's documents as they reach the dedup stages (earlier stages applied)."""
    table = before_dedup(plan, spec).documents
    order = order_keys(plan.index, table.num_rows)
    keys: dict[str, pd.DataFrame] = {}
    if spec.exact_dedup is not None:
        high, low = exact_keys(table, spec.exact_dedup)
        keys["exact"] = pd.DataFrame({"high": high, "low": low, "order": order})
    if spec.minhash_dedup is not None:
        keys["sigs"], keys["bands"] = minhash_keys(table, spec.minhash_dedup, order)
    return keys


INDEX_PARTITION_BASE = -(1 << 30)  # index part k gets order keys of pseudo-partition BASE + k: all negative


def index_keys(url: str, pseudo_partition: int, spec: WorkflowSpec) -> dict[str, pd.DataFrame]:
    """Keys of one part of an earlier job's index; negative order keys make its documents come first."""
    table = pq.read_table(pa.BufferReader(read_bytes(url, real=True)))
    order = order_keys(pseudo_partition, table.num_rows)
    sig = unpack_signatures(table.column("sig").to_pandas())
    sigs = table.select(["id", "source"]).to_pandas().assign(order=order, sig=table.column("sig").to_pylist())
    keys = {"sigs": sigs, "bands": band_rows(sig, order, spec.minhash_dedup)}
    if spec.exact_dedup is not None and "high" in table.column_names:
        keys["exact"] = pd.DataFrame(
            {"high": table.column("high").to_numpy(), "low": table.column("low").to_numpy(), "order": order}
        )
    return keys


def index_rows(keys: dict[str, pd.DataFrame], decided: pd.DataFrame) -> pa.Table:
    """This partition's documents that survive dedup, as rows of the next index."""
    sigs = keys["sigs"]
    dropped = decided.loc[decided["reason"].notna(), "order"]
    rows = sigs[~sigs["order"].isin(dropped)]
    if "exact" in keys:
        rows = rows.merge(keys["exact"], on="order", how="left")
    return pa.Table.from_pandas(rows.drop(columns=["order"]), preserve_index=False)


def _write_index_part(keys: dict[str, pd.DataFrame], decided: pd.DataFrame, staging: str, name: str) -> int:
    table = index_rows(keys, decided)
    write_index_part(staging, name, table)
    return table.num_rows


def _copy_index_part(url: str, staging: str) -> int:
    data = read_bytes(url, real=True)
    write_bytes_atomic(join(staging, part_name(url)), data)
    return pq.read_metadata(pa.BufferReader(data)).num_rows


def _frame(parts: list, name: str, meta: pd.DataFrame) -> dd.DataFrame:
    return dd.from_delayed([delayed(operator.getitem)(p, name) for p in parts], meta=meta, verify_meta=False)


def _candidate_edges(parts: list, config: MinHashDedupConfig) -> dd.DataFrame:
    """Star edges of every LSH bucket, after a shuffle of the band rows by bucket key."""
    bands = _frame(parts, "bands", BANDS_META)
    return bands.shuffle("bucket").map_partitions(bucket_edges, meta=EDGES_META)


def signatures_of(keys: dict[str, pd.DataFrame], wanted: np.ndarray) -> pd.DataFrame:
    """The signatures of one partition's documents that appear in candidate edges."""
    sigs = keys["sigs"]
    return sigs[sigs["order"].isin(wanted)]


def _wanted(edges: pd.DataFrame, partition: int) -> np.ndarray:
    ends = np.unique(np.concatenate([edges["a"].to_numpy(), edges["b"].to_numpy()]))
    return ends[(ends >> 32) == partition]


def _write_decisions(decided: pd.DataFrame, spec: WorkflowSpec, partition: int) -> int:
    mine = decided[(decided["order"].to_numpy() >> 32) == partition]
    table = pa.Table.from_pandas(mine, schema=DECISIONS_SCHEMA, preserve_index=False).sort_by("order")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(decisions_url(spec, partition), sink.getvalue().to_pybytes())
    return table.num_rows


def compute_decisions(
    client: Client, spec: WorkflowSpec, plans: list[PartitionPlan], cancelled: Callable[[], bool] | None = None
) -> None:
    """Run the global dedup step and write one decisions file per partition, then a success marker."""
    done = join(spec.output.url, "dedup", "_decisions", "_SUCCESS")
    if exists(done) and read_bytes(done, real=True).decode() == spec.fingerprint():
        return
    # Signatures travel as bytes; Dask must not turn object columns into (UTF-8) strings.
    with dask.config.set({"dataframe.convert-string": False}):
        _compute_decisions(client, spec, plans, cancelled)
    write_bytes_atomic(done, spec.fingerprint().encode())


def _compute_decisions(
    client: Client, spec: WorkflowSpec, plans: list[PartitionPlan], cancelled: Callable[[], bool] | None
) -> None:
    fingerprint = spec.task_prefix()
    minhash = spec.minhash_dedup
    parts = [client.submit(partition_keys, p, spec, key=f"dedup-keys-{fingerprint}-{p.index}") for p in plans]
    numbers = [p.index for p in plans]
    old_urls = index_parts(minhash.index, minhash) if minhash is not None and minhash.index else []
    for k, url in enumerate(old_urls):
        parts.append(
            client.submit(index_keys, url, INDEX_PARTITION_BASE + k, spec, key=f"dedup-index-{fingerprint}-{k}")
        )
        numbers.append(INDEX_PARTITION_BASE + k)
    frames: list[dd.DataFrame] = []
    if spec.exact_dedup is not None:
        exact = _frame(parts, "exact", EXACT_META)
        frames.append(exact.shuffle("high").map_partitions(exact_edges, meta=EDGES_META))
    if minhash is not None:
        frames.append(_candidate_edges(parts, minhash))
    edges = delayed(pd.concat)([piece for frame in frames for piece in frame.to_delayed()])
    sigs = []
    if minhash is not None:
        sigs = [
            delayed(signatures_of)(part, delayed(_wanted)(edges, number))
            for part, number in zip(parts, numbers, strict=True)
        ]
    threshold = minhash.threshold if minhash else 1.0
    decided = delayed(decide)(edges, sigs, threshold)
    writes = [delayed(_write_decisions)(decided, spec, plan.index) for plan in plans]
    what = f"{spec.name} (dedup step)"
    if minhash is None:
        gather_cancellable(client, client.compute(writes), cancelled, what)
        return
    staging = join(spec.output.url, "dedup", "_index-staging")
    writes += [
        delayed(_write_index_part)(part, decided, staging, f"{spec.fingerprint()}-part-{plan.index:05d}.parquet")
        for part, plan in zip(parts, plans, strict=False)
    ]
    writes += [delayed(_copy_index_part)(url, staging) for url in old_urls]
    counts = gather_cancellable(client, client.compute(writes), cancelled, what)
    commit_index(staging, join(spec.output.url, "dedup", "index"), minhash, sum(counts[len(plans) :]))


def load_decisions(spec: WorkflowSpec, partition: int) -> pa.Table:
    data = read_bytes(decisions_url(spec, partition), real=True)
    return pq.read_table(pa.BufferReader(data), schema=DECISIONS_SCHEMA)

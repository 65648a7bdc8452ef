"""Global deduplication on Dask: keys per partition, shuffles by hash and by LSH bucket, clusters.

Nothing is collected on the driver. Band keys and exact hashes are shuffled between workers by Dask's
DataFrame shuffle; candidate pairs are joined with their signatures by Dask merges; connected components run
in one worker task over the verified edges only (a few per duplicate, not per document). The decisions come
back range-partitioned by order key, one file per input partition, which the partition tasks then apply.
"""

from __future__ import annotations

import operator

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dask import delayed
from distributed import Client

from pipeline.partition import PartitionPlan, read_partition, run_stage
from schemas.spec import WorkflowSpec
from schemas.stages import MinHashDedupConfig
from stages.dedup import (
    EDGE_COLUMNS,
    bucket_edges,
    clusters,
    exact_edges,
    exact_keys,
    minhash_keys,
    order_keys,
    unpack_signatures,
    verify_edges,
)
from stages.minhash import estimate_jaccard
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
    state = read_partition(plan, spec.input)
    for stage in spec.stages_before_dedup:
        state = run_stage(state, stage)
    table = state.documents
    order = order_keys(plan.index, table.num_rows)
    keys: dict[str, pd.DataFrame] = {}
    if spec.exact_dedup is not None:
        high, low = exact_keys(table, spec.exact_dedup)
        keys["exact"] = pd.DataFrame({"high": high, "low": low, "order": order})
    if spec.minhash_dedup is not None:
        keys["sigs"], keys["bands"] = minhash_keys(table, spec.minhash_dedup, order)
    return keys


def _frame(parts: list, name: str, meta: pd.DataFrame) -> dd.DataFrame:
    return dd.from_delayed([delayed(operator.getitem)(p, name) for p in parts], meta=meta, verify_meta=False)


def _near_edges(parts: list, config: MinHashDedupConfig) -> tuple[dd.DataFrame, dd.DataFrame]:
    sigs = _frame(parts, "sigs", SIGS_META)
    candidates = (
        _frame(parts, "bands", BANDS_META)
        .shuffle("bucket")
        .map_partitions(bucket_edges, meta=EDGES_META)
        .drop_duplicates(subset=["a", "b"])
    )
    paired = candidates.merge(sigs.rename(columns={"order": "a", "sig": "sig_a"}), on="a").merge(
        sigs.rename(columns={"order": "b", "sig": "sig_b"}), on="b"
    )
    return paired.map_partitions(verify_edges, config.threshold, meta=EDGES_META), sigs


def _similarity(members: pd.DataFrame) -> pd.DataFrame:
    """Estimated Jaccard of each member to its cluster's kept document (1.0 without signatures)."""
    out = members[["order", "cluster", "reason"]].copy()
    sim = np.ones(len(members), np.float32)
    if "sig_m" in members:
        has = members["sig_m"].notna() & members["sig_k"].notna()
        if has.any():
            sim[has.to_numpy()] = estimate_jaccard(
                unpack_signatures(members.loc[has, "sig_m"]), unpack_signatures(members.loc[has, "sig_k"])
            )
    out["similarity"] = sim
    return out


def _write_decisions(frame: pd.DataFrame, spec: WorkflowSpec, partition: int) -> int:
    table = pa.Table.from_pandas(frame.reset_index(), schema=DECISIONS_SCHEMA, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table.sort_by("order"), sink)
    write_bytes_atomic(decisions_url(spec, partition), sink.getvalue().to_pybytes())
    return table.num_rows


def compute_decisions(client: Client, spec: WorkflowSpec, plans: list[PartitionPlan]) -> None:
    """Run the global dedup step and write one decisions file per partition, then a success marker."""
    done = join(spec.output.url, "dedup", "_decisions", "_SUCCESS")
    if exists(done) and read_bytes(done).decode() == spec.fingerprint():
        return
    # Signatures travel as bytes; Dask must not turn object columns into (UTF-8) strings.
    with dask.config.set({"dataframe.convert-string": False}):
        _compute_decisions(client, spec, plans)
    write_bytes_atomic(done, spec.fingerprint().encode())


def _compute_decisions(client: Client, spec: WorkflowSpec, plans: list[PartitionPlan]) -> None:
    fingerprint = spec.fingerprint()
    parts = [client.submit(partition_keys, p, spec, key=f"dedup-keys-{fingerprint}-{p.index}") for p in plans]
    edges: list[dd.DataFrame] = []
    sigs = None
    if spec.exact_dedup is not None:
        edges.append(_frame(parts, "exact", EXACT_META).shuffle("high").map_partitions(exact_edges, meta=EDGES_META))
    if spec.minhash_dedup is not None:
        near, sigs = _near_edges(parts, spec.minhash_dedup)
        edges.append(near)
    all_edges = dd.concat(edges) if len(edges) > 1 else edges[0]
    members = dd.from_delayed(
        [delayed(clusters)(delayed(pd.concat)(all_edges.to_delayed()))],
        meta=pd.DataFrame(
            {
                "order": pd.Series(dtype="int64"),
                "cluster": pd.Series(dtype="int64"),
                "reason": pd.Series(dtype="object"),
            }
        ),
        verify_meta=False,
    )
    if sigs is not None:
        members = members.merge(sigs.rename(columns={"sig": "sig_m"}), on="order", how="left").merge(
            sigs.rename(columns={"order": "cluster", "sig": "sig_k"}), on="cluster", how="left"
        )
    meta = pd.DataFrame({"order": pd.Series(dtype="int64"), "cluster": pd.Series(dtype="int64"),
                         "reason": pd.Series(dtype="object"), "similarity": pd.Series(dtype="float32")})  # fmt: skip
    decided = members.map_partitions(_similarity, meta=meta)
    last = (len(plans) - 1) << 32 | 0xFFFFFFFF
    divisions = [p.index << 32 for p in plans] + [last]
    ranged = decided.set_index("order", divisions=divisions)
    writes = [
        delayed(_write_decisions)(piece, spec, plan.index)
        for piece, plan in zip(ranged.to_delayed(), plans, strict=True)
    ]
    client.compute(writes, sync=True)


def load_decisions(spec: WorkflowSpec, partition: int) -> pa.Table:
    return pq.read_table(pa.BufferReader(read_bytes(decisions_url(spec, partition))), schema=DECISIONS_SCHEMA)

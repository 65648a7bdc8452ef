"""Global deduplication on Dask: keys per partition, shuffles by hash and by LSH bucket, clusters.

Nothing is collected on the driver. Exact hashes and LSH band keys are shuffled between workers by Dask's
DataFrame shuffle, which turns them into candidate edges (a few per duplicate, none per unique document). Each
partition's task then hands over the signatures of its candidate documents only, and one worker task verifies
the pairs, finds the connected components and writes one decisions file per input partition, which the
partition tasks apply.
"""

from __future__ import annotations

import operator
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask import delayed
from distributed import Client

from pipeline.partition import PartitionPlan
from pipeline.segments import Segment, SegmentState, barrier_configs, work_url
from pipeline.waiting import as_finished, gather_cancellable
from schemas.spec import WorkflowSpec
from schemas.stages import MinHashDedupConfig
from stages.dedup import (
    EDGE_COLUMNS,
    band_rows,
    bucket_edges,
    decide,
    exact_edges,
    order_keys,
    unpack_signatures,
)
from storage.dedup_index import commit_index, index_parts, part_name, write_index_part
from storage.fs import exists, join, read_bytes, write_bytes_atomic
from storage.parts import part_url, read_part

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


def decisions_url(spec: WorkflowSpec, segment: int, partition: int) -> str:
    """Decisions of the barrier before ``segment`` for one partition (``dedup/_decisions/`` for the first)."""
    where = "_decisions" if segment <= 1 else f"_decisions-{segment}"
    return join(spec.output.url, "dedup", where, f"part-{partition:05d}.parquet")


@dataclass(frozen=True)
class KeysPart:
    """One batch's keys file, written by the segment before the barrier."""

    partition: int
    url: str


def keys_parts(spec: WorkflowSpec, segment: Segment, plans: list[PartitionPlan]) -> list[KeysPart]:
    """The keys files of the segment before ``segment`` (listed from each split's state)."""
    parts = []
    for plan in plans:
        work = work_url(spec, segment.index - 1, plan)
        state = SegmentState.load(join(work, "state.json"))
        parts += [KeysPart(plan.index, part_url(work, "keys", n)) for n, b in enumerate(state.batches) if b["keys"]]
    return parts


def load_keys(part: KeysPart, exact: bool, minhash: MinHashDedupConfig | None) -> dict[str, pd.DataFrame]:
    """Dedup keys of one batch of documents as they reached the barrier (earlier stages applied)."""
    table = read_part(part.url)
    order = table.column("order").to_numpy()
    keys: dict[str, pd.DataFrame] = {}
    if exact:
        keys["exact"] = pd.DataFrame(
            {"high": table.column("high").to_numpy(), "low": table.column("low").to_numpy(), "order": order}
        )
    if minhash is not None:
        usable = table.filter(pc.is_valid(table.column("sig")))
        sigs = usable.select(["id", "source"]).to_pandas()
        sigs = sigs.assign(order=usable.column("order").to_numpy(), sig=usable.column("sig").to_pylist())
        keys["sigs"] = sigs[["order", "sig", "id", "source"]]
        keys["bands"] = band_rows(unpack_signatures(keys["sigs"]["sig"]), sigs["order"].to_numpy(), minhash)
    return keys


INDEX_PARTITION_BASE = -(1 << 30)  # index part k gets order keys of pseudo-partition BASE + k: all negative


def index_keys(url: str, pseudo_partition: int, exact: bool, minhash: MinHashDedupConfig) -> dict[str, pd.DataFrame]:
    """Keys of one part of an earlier job's index; negative order keys make its documents come first."""
    table = pq.read_table(pa.BufferReader(read_bytes(url, real=True)))
    order = order_keys(pseudo_partition, table.num_rows)
    sig = unpack_signatures(table.column("sig").to_pandas())
    sigs = table.select(["id", "source"]).to_pandas().assign(order=order, sig=table.column("sig").to_pylist())
    keys = {"sigs": sigs, "bands": band_rows(sig, order, minhash)}
    if exact and "high" in table.column_names:
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


def _write_decisions(decided: pd.DataFrame, spec: WorkflowSpec, segment: int, partition: int) -> int:
    mine = decided[(decided["order"].to_numpy() >> 32) == partition]
    table = pa.Table.from_pandas(mine, schema=DECISIONS_SCHEMA, preserve_index=False).sort_by("order")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(decisions_url(spec, segment, partition), sink.getvalue().to_pybytes())
    return table.num_rows


def compute_decisions(
    client: Client,
    spec: WorkflowSpec,
    segment: Segment,
    plans: list[PartitionPlan],
    cancelled: Callable[[], bool] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> None:
    """Run the barrier before ``segment`` and write one decisions file per partition, then a success marker.
    ``on_phase(text)`` hears each sub-step (keys read, shuffles and clusters, decisions written)."""
    done = join(posixpath.dirname(decisions_url(spec, segment.index, 0)), "_SUCCESS")
    if exists(done) and read_bytes(done, real=True).decode() == spec.fingerprint():
        return
    # Signatures travel as bytes; Dask must not turn object columns into (UTF-8) strings.
    with dask.config.set({"dataframe.convert-string": False}):
        _compute_decisions(client, spec, segment, plans, cancelled, on_phase or (lambda _: None))
    write_bytes_atomic(done, spec.fingerprint().encode())


def _compute_decisions(
    client: Client,
    spec: WorkflowSpec,
    segment: Segment,
    plans: list[PartitionPlan],
    cancelled: Callable[[], bool] | None,
    on_phase: Callable[[str], None],
) -> None:
    prefix = f"{spec.task_prefix()}-{segment.index}"
    step = "+".join(s.stage for s in segment.barrier)
    exact, minhash = barrier_configs(segment.barrier)
    sources = keys_parts(spec, segment, plans)
    parts = [
        client.submit(load_keys, p, exact is not None, minhash, key=f"dedup-keys-{prefix}-{k}")
        for k, p in enumerate(sources)
    ]
    numbers = [p.partition for p in sources]
    old_urls = index_parts(minhash.index, minhash) if minhash is not None and minhash.index else []
    for k, url in enumerate(old_urls):
        pseudo = INDEX_PARTITION_BASE + k
        parts.append(
            client.submit(index_keys, url, pseudo, exact is not None, minhash, key=f"dedup-index-{prefix}-{k}")
        )
        numbers.append(pseudo)
    what = f"{spec.name} (dedup step)"
    for n, _ in enumerate(as_finished(client, parts, cancelled, what), start=1):
        if n == len(parts) or n % max(1, len(parts) // 10) == 0:
            on_phase(f"{step}: keys of {n}/{len(parts)} batches read")
    shuffles = " and ".join(x for x, on in (("exact hash", exact), ("LSH bucket", minhash)) if on is not None)
    checks = ", verifying candidate pairs" if minhash is not None else ""
    on_phase(f"{step}: shuffling keys by {shuffles}{checks}, clustering")
    frames: list[dd.DataFrame] = []
    if exact is not None:
        keys = _frame(parts, "exact", EXACT_META)
        frames.append(keys.shuffle("high").map_partitions(exact_edges, meta=EDGES_META))
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
    writes = [delayed(_write_decisions)(decided, spec, segment.index, plan.index) for plan in plans]
    if minhash is None:
        gather_cancellable(client, client.compute(writes), cancelled, what)
        on_phase(f"{step}: decisions written for {len(plans)} partitions")
        return
    staging = join(spec.output.url, "dedup", "_index-staging")
    writes += [
        delayed(_write_index_part)(part, decided, staging, f"{spec.fingerprint()}-part-{k:05d}.parquet")
        for k, part in enumerate(parts[: len(sources)])
    ]
    writes += [delayed(_copy_index_part)(url, staging) for url in old_urls]
    counts = gather_cancellable(client, client.compute(writes), cancelled, what)
    commit_index(staging, join(spec.output.url, "dedup", "index"), minhash, sum(counts[len(plans) :]))
    on_phase(f"{step}: decisions written for {len(plans)} partitions, index of {sum(counts[len(plans) :])} documents")


def load_decisions(spec: WorkflowSpec, segment: int, partition: int) -> pa.Table:
    data = read_bytes(decisions_url(spec, segment, partition), real=True)
    return pq.read_table(pa.BufferReader(data), schema=DECISIONS_SCHEMA)

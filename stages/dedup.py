"""The pure parts of global deduplication: keys per batch, edges per bucket, clusters, decisions.

Dask moves these tables between workers (``pipeline/dedup.py``); everything here is a function of its
arguments, testable with a few rows. Order keys (``partition << 32 | row``) say which copy came first in
source order: the earliest document of a cluster is the one kept.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from schemas.document import DROP_REASON
from schemas.stages import ExactDedupConfig, MinHashDedupConfig
from stages.components import components_in_memory
from stages.minhash import band_keys, has_shingles, signatures
from stages.normalize import normalize

EXACT = "exact_duplicate"
NEAR = "near_duplicate"
EDGE_COLUMNS = {"a": "int64", "b": "int64", "kind": "object"}


def order_keys(partition: int, n: int) -> np.ndarray:
    return (np.int64(partition) << np.int64(32)) | np.arange(n, dtype=np.int64)


def exact_keys(table: pa.Table, config: ExactDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """128-bit xxh3 of each normalised text, as two uint64 arrays (hashed straight from the UTF-8 buffer)."""
    text = normalize(table.column("text"), config.normalization)
    text = (text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text).cast(pa.large_string())
    offsets = np.frombuffer(text.buffers()[1], np.int64)[text.offset : text.offset + len(text) + 1]
    data = memoryview(text.buffers()[2]) if text.buffers()[2] is not None else memoryview(b"")
    digests = [xxhash.xxh3_128_intdigest(data[s:e]) for s, e in itertools.pairwise(offsets.tolist())]
    high = np.array([d >> 64 for d in digests], np.uint64)
    low = np.array([d & 0xFFFFFFFFFFFFFFFF for d in digests], np.uint64)
    return high, low


def minhash_keys(table: pa.Table, config: MinHashDedupConfig, order: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(signatures, band rows)`` of a batch: one row per document with shingles, one per (document, band)."""
    sig = signatures(table.column("text"), config)
    usable = has_shingles(sig)
    sigs = pd.DataFrame(
        {
            "order": order[usable],
            "sig": [row.tobytes() for row in sig[usable]],
            "id": table.column("id").filter(pa.array(usable)).to_pandas(),
            "source": table.column("source").filter(pa.array(usable)).to_pandas(),
        }
    )
    return sigs, band_rows(sig[usable], order[usable], config)


def band_rows(sig: np.ndarray, order: np.ndarray, config: MinHashDedupConfig) -> pd.DataFrame:
    keys = band_keys(sig, config) ^ (np.arange(config.bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return pd.DataFrame({"bucket": keys.ravel(), "order": np.repeat(order, config.bands)})


def bucket_edges(bands: pd.DataFrame) -> pd.DataFrame:
    """Star edges (first document, other document) of every LSH bucket with two or more documents."""
    if bands.empty:
        return pd.DataFrame({k: pd.Series(dtype=v) for k, v in EDGE_COLUMNS.items()})
    bands = bands.sort_values(["bucket", "order"], kind="stable")
    bucket = bands["bucket"].to_numpy()
    order = bands["order"].to_numpy()
    first = np.r_[True, bucket[1:] != bucket[:-1]]
    head = order[np.flatnonzero(first)[np.cumsum(first) - 1]]
    keep = ~first
    return pd.DataFrame({"a": head[keep], "b": order[keep], "kind": "near"}).astype(EDGE_COLUMNS)


def exact_edges(keys: pd.DataFrame) -> pd.DataFrame:
    """Edges (first copy, later copy) of every group of equal normalised texts."""
    if keys.empty:
        return pd.DataFrame({k: pd.Series(dtype=v) for k, v in EDGE_COLUMNS.items()})
    keys = keys.sort_values(["high", "low", "order"], kind="stable")
    high, low, order = keys["high"].to_numpy(), keys["low"].to_numpy(), keys["order"].to_numpy()
    first = np.r_[True, (high[1:] != high[:-1]) | (low[1:] != low[:-1])]
    head = order[np.flatnonzero(first)[np.cumsum(first) - 1]]
    keep = ~first
    return pd.DataFrame({"a": head[keep], "b": order[keep], "kind": "exact"}).astype(EDGE_COLUMNS)


def unpack_signatures(column: pd.Series) -> np.ndarray:
    """Signatures travel between workers as bytes (Arrow-friendly); back to a (n, num_perm) uint32 array. A column
    of Arrow binary (the job's frames: one buffer, no Python object per signature) is read without a copy."""
    if len(column) == 0:
        return np.zeros((0, 0), np.uint32)
    if isinstance(column.dtype, pd.ArrowDtype):
        array = column.array.__arrow_array__()
        array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
        offsets = np.frombuffer(array.buffers()[1], np.int32)[array.offset : array.offset + len(array) + 1]
        width = offsets[1] - offsets[0]
        if array.null_count or not (np.diff(offsets) == width).all():
            raise ValueError("signatures of unequal length (or missing) cannot be unpacked together")
        values = np.frombuffer(array.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        return values.view(np.uint32).reshape(len(array), -1)
    return np.frombuffer(b"".join(column.to_numpy()), np.uint32).reshape(len(column), -1)


def clusters(edges: pd.DataFrame) -> pd.DataFrame:
    """Connected components of a duplicate graph held in memory: ``order``, ``cluster`` (= earliest order in
    it), ``reason`` (None for the kept document). A document with an exact twin earlier in source order is an
    exact duplicate even when its cluster is larger. (The job's step builds the same on Dask, in
    ``pipeline.dedup_graph``; this is its small-scale twin, for tests and tools.)"""
    if edges.empty:
        return pd.DataFrame({"order": pd.Series(dtype="int64"), "cluster": pd.Series(dtype="int64"),
                             "reason": pd.Series(dtype="object")})  # fmt: skip
    labels = components_in_memory(pd.DataFrame({"u": edges["a"].to_numpy(), "v": edges["b"].to_numpy()}))
    roots = np.unique(labels["root"].to_numpy())
    nodes = np.concatenate([labels["node"].to_numpy(), roots])
    cluster = np.concatenate([labels["root"].to_numpy(), roots])
    exact_later = np.unique(edges.loc[edges["kind"] == "exact", "b"].to_numpy())
    reason = np.where(np.isin(nodes, exact_later), EXACT, NEAR).astype(object)
    reason[nodes == cluster] = None
    rank = np.argsort(nodes, kind="stable")
    return pd.DataFrame({"order": nodes[rank], "cluster": cluster[rank], "reason": reason[rank]})


def apply_decisions(table: pa.Table, decisions: pa.Table, partition: int, stage: str, start: int = 0) -> pa.Table:
    """Mark this partition's duplicates for dropping and add the dedup columns ``<stage>_cluster``,
    ``<stage>_similarity`` and ``<stage>_kept_id`` (the id of the document kept for the cluster) to every row
    (null when the document is in no cluster). ``start``: the batch's first row within the partition's
    documents, in the order their keys were written."""
    order = pa.array(order_keys(partition, table.num_rows) + start)
    position = pc.index_in(order, value_set=decisions.column("order"))
    reason = pc.take(decisions.column("reason"), position)
    table = table.append_column(f"{stage}_cluster", pc.take(decisions.column("cluster"), position))
    table = table.append_column(f"{stage}_similarity", pc.take(decisions.column("similarity"), position))
    table = table.append_column(f"{stage}_kept_id", pc.take(decisions.column("kept_id"), position))
    if DROP_REASON in table.column_names:
        reason = pc.coalesce(table.column(DROP_REASON), reason)
        table = table.drop_columns([DROP_REASON])
    return table.append_column(DROP_REASON, reason)

"""The duplicate graph of a global dedup step as Dask DataFrames: candidate edges, their verification where the
signatures meet, and each member's decision. Every step is a shuffle or a join of bounded partitions; nothing is
gathered in one task (the components of a small graph excepted, see ``pipeline.dedup``).

Frames (order keys are int64, ``partition << 32 | row``):

- candidate edges ``a, b, kind``: exact copies (first copy, later copy) after a shuffle of the exact hashes,
  LSH star edges (first document of a bucket, other document) after a shuffle of the band keys;
- verified edges: the near candidates whose two signatures, joined on each end, estimate a Jaccard similarity
  of at least the threshold, plus every exact edge;
- decisions ``order, cluster, reason, similarity, kept_id, partition``: each member of a component with its
  component's smallest order key (the document kept), why it goes, its similarity to the kept document.
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
from dask import delayed

from pipeline.dedup_keys import KeysPart, read_keys
from pipeline.frame_runs import FrameRun
from schemas.stages import MinHashDedupConfig
from stages.dedup import EDGE_COLUMNS, EXACT, NEAR, bucket_edges, exact_edges, unpack_signatures
from stages.minhash import estimate_jaccard

EXACT_META = pd.DataFrame({"high": pd.Series(dtype="uint64"), "low": pd.Series(dtype="uint64"),
                           "order": pd.Series(dtype="int64")})  # fmt: skip
BANDS_META = pd.DataFrame({"bucket": pd.Series(dtype="uint64"), "order": pd.Series(dtype="int64")})
SIGS_META = pd.DataFrame({"order": pd.Series(dtype="int64"), "sig": pd.Series(dtype=pd.ArrowDtype(pa.binary()))})
IDS_META = pd.DataFrame({"order": pd.Series(dtype="int64"), "id": pd.Series(dtype=pd.ArrowDtype(pa.string()))})
DOCUMENTS_META = IDS_META.assign(sig=SIGS_META["sig"])
EDGES_META = pd.DataFrame({k: pd.Series(dtype=v) for k, v in EDGE_COLUMNS.items()})
LABELS_META = pd.DataFrame({"node": pd.Series(dtype="int64"), "root": pd.Series(dtype="int64")})
DECIDED_META = pd.DataFrame(
    {
        "order": pd.Series(dtype="int64"),
        "cluster": pd.Series(dtype="int64"),
        "reason": pd.Series(dtype="object"),
        "similarity": pd.Series(dtype="float32"),
        "kept_id": pd.Series(dtype=pd.ArrowDtype(pa.string())),
        "partition": pd.Series(dtype="int64"),
    }
)


def frame(
    parts: list[KeysPart], name: str, meta: pd.DataFrame, partitions: int, minhash: MinHashDedupConfig | None = None
) -> dd.DataFrame:
    """One table of every keys part's ``name`` rows (``pipeline.dedup_keys.read_keys``), each part read from its
    file by the task that needs it. For a step of one partition (``partitions``), one task reads every part: the
    shuffle would have gathered them anyway, and one piece instead of one per batch removes most of the step's
    tasks (each shuffle splits and concatenates every piece)."""
    if partitions == 1:
        return dd.from_delayed([delayed(_read_all)(parts, name, minhash)], meta=meta, verify_meta=False)
    return dd.from_delayed([delayed(read_keys)(p, name, minhash) for p in parts], meta=meta, verify_meta=False)


def _read_all(parts: list[KeysPart], name: str, minhash: MinHashDedupConfig | None) -> pd.DataFrame:
    return pd.concat([read_keys(p, name, minhash) for p in parts], ignore_index=True)


def exact_candidates(parts: list[KeysPart], partitions: int) -> dd.DataFrame:
    keys = frame(parts, "exact", EXACT_META, partitions).shuffle("high", npartitions=partitions)
    return keys.map_partitions(exact_edges, meta=EDGES_META)


def near_candidates(parts: list[KeysPart], minhash: MinHashDedupConfig, partitions: int) -> dd.DataFrame:
    """Distinct star edges of every LSH bucket (a pair sharing several bands is one candidate)."""
    bands = frame(parts, "bands", BANDS_META, partitions, minhash).shuffle("bucket", npartitions=partitions)
    edges = bands.map_partitions(bucket_edges, meta=EDGES_META)
    return edges.drop_duplicates(subset=["a", "b"], split_out=partitions)


def verified(
    run: FrameRun, candidates: dd.DataFrame, parts: list[KeysPart], threshold: float, partitions: int
) -> dd.DataFrame:
    """The candidates whose signatures estimate a Jaccard of at least ``threshold``: each edge meets the
    signature of one end in a join on that end (staged by ``run``), then the other's.

    Each join reads the signatures from the keys files itself: one frame feeding both shuffles would keep every
    part read for the first until the second had taken it, the size of the corpus in memory. The first join's
    output is kept for the same reason: Dask runs every output task of a join before the next shuffle takes
    them, so a worker held its share of every candidate with a signature (0.26 GB at 4M short documents)."""
    side_a = frame(parts, "sigs", SIGS_META, partitions).rename(columns={"order": "a", "sig": "sig_a"})
    side_b = frame(parts, "sigs", SIGS_META, partitions).rename(columns={"order": "b", "sig": "sig_b"})
    joined = run.stage(candidates.merge(side_a, on="a", how="inner", npartitions=partitions), "with-sig-a")
    joined = joined.merge(side_b, on="b", how="inner", npartitions=partitions)
    return joined.map_partitions(_similar, threshold, meta=EDGES_META)


def _similar(edges: pd.DataFrame, threshold: float) -> pd.DataFrame:
    if edges.empty:
        return EDGES_META.copy()
    sim = estimate_jaccard(unpack_signatures(edges["sig_a"]), unpack_signatures(edges["sig_b"]))
    return edges.loc[sim >= threshold, ["a", "b", "kind"]].astype(EDGE_COLUMNS)


def decisions(
    run: FrameRun, labels: dd.DataFrame, graph: dd.DataFrame, parts: list[KeysPart], minhash: bool, partitions: int
) -> dd.DataFrame:
    """Every member of a component (``labels``: each non-centre node and its centre; the centres added) with
    its reason, its similarity to the kept document (``minhash``: from their signatures) and the kept document's
    id.

    The members meet the kept document's id and signature in one join on ``root``, then their own signature in
    a join on ``node`` (each join reads the keys files itself, see ``verified``); the similarity is computed
    before the last shuffle, so no shuffle carries two signatures a row. Each join's output that feeds another
    shuffle is staged by ``run`` (see ``verified``)."""
    roots = labels[["root"]].drop_duplicates(split_out=partitions)
    members = dd.concat([labels, roots.assign(node=roots["root"])[["node", "root"]]])
    # renamed before the shuffle of drop_duplicates: dask 2026.8 fails to plan a rename right after one
    later = graph.loc[graph["kind"] == "exact", ["b"]].rename(columns={"b": "node"})
    later = later.drop_duplicates(split_out=partitions).assign(exact=True)
    members = run.stage(members.merge(later, on="node", how="left", npartitions=partitions), "members")
    documents = (
        frame(parts, "documents", DOCUMENTS_META, partitions) if minhash else frame(parts, "ids", IDS_META, partitions)
    )
    kept = documents.rename(columns={"order": "root", "id": "kept_id", "sig": "sig_root"})
    members = members.merge(kept, on="root", how="left", npartitions=partitions)
    if minhash:
        members = run.stage(members, "members-kept")
        own = frame(parts, "sigs", SIGS_META, partitions).rename(columns={"order": "node", "sig": "sig_node"})
        members = members.merge(own, on="node", how="left", npartitions=partitions)
    return run.stage(members.map_partitions(decision_rows, meta=DECIDED_META), "decided")


def decision_rows(members: pd.DataFrame) -> pd.DataFrame:
    """A kept document has no reason; a later exact copy is an exact duplicate even in a larger cluster; the
    rest are near duplicates. Similarity: estimated from the two signatures, 1 where one is missing."""
    node, root = members["node"].to_numpy(np.int64), members["root"].to_numpy(np.int64)
    exact = members["exact"].fillna(False).to_numpy(bool) if "exact" in members else np.zeros(len(node), bool)
    reason = np.where(exact, EXACT, NEAR).astype(object)
    reason[node == root] = None
    similarity = np.ones(len(node), np.float32)
    if "sig_node" in members and len(node):
        has = (members["sig_node"].notna() & members["sig_root"].notna()).to_numpy()
        if has.any():
            similarity[has] = estimate_jaccard(
                unpack_signatures(members.loc[has, "sig_node"]), unpack_signatures(members.loc[has, "sig_root"])
            )
    return pd.DataFrame(
        {
            "order": node,
            "cluster": root,
            "reason": reason,
            "similarity": similarity,
            "kept_id": members["kept_id"].array,
            "partition": node >> 32,
        }
    )

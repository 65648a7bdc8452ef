"""Connected components of the duplicate graph: large-star/small-star rounds against scipy, on one process and
on a Dask cluster, and a dedup job whose verdicts are the same whether its graph is clustered in one task or in
rounds of shuffles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from stages.components import components_in_memory

from .conftest import tree_bytes
from .dedup_corpus import real_paragraphs


def scipy_labels(u: np.ndarray, v: np.ndarray) -> dict[int, int]:
    """Each node that is not its component's smallest, with that smallest node (the reference)."""
    nodes, index = np.unique(np.concatenate([u, v]), return_inverse=True)
    a, b = index[: len(u)], index[len(u) :]
    _, label = scipy_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(len(nodes),) * 2), directed=False)
    smallest = np.full(label.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, label, nodes)
    return {int(n): int(r) for n, r in zip(nodes, smallest[label], strict=True) if n != r}


def shaped_graph(rng: np.random.Generator, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Random edges plus the shapes a duplicate graph takes and the one that needs most rounds: stars (a
    document and its near-copies), cliques (copies of each other), chains (edits of edits), shuffled labels."""
    u, v = [rng.integers(0, scale, scale)], [rng.integers(0, scale, scale)]
    base = 10 * scale
    for _ in range(max(scale // 500, 2)):
        size = int(rng.integers(2, 40))
        nodes = rng.permutation(size) + base
        kind = rng.integers(3)
        if kind == 0:  # star
            u.append(np.repeat(nodes[0], size - 1))
            v.append(nodes[1:])
        elif kind == 1:  # clique
            i, j = np.triu_indices(size, 1)
            u.append(nodes[i])
            v.append(nodes[j])
        else:  # chain in a random label order
            u.append(nodes[:-1])
            v.append(nodes[1:])
        base += size
    chain = rng.permutation(300) + base
    u.append(chain[:-1])
    v.append(chain[1:])
    return np.concatenate(u).astype(np.int64), np.concatenate(v).astype(np.int64)


def test_rounds_in_one_process_find_scipys_components() -> None:
    rng = np.random.default_rng(4)
    for scale in (1, 10, 1000, 20_000):
        u, v = shaped_graph(rng, scale)
        labels = components_in_memory(pd.DataFrame({"u": u, "v": v}))
        assert dict(zip(labels["node"].tolist(), labels["root"].tolist(), strict=True)) == scipy_labels(u, v)


def test_rounds_find_scipys_components_on_thousands_of_small_graphs() -> None:
    """Small graphs hold the awkward orders: a chain stored out of order (0-2-3-4-1) once stopped with a node
    pointing at two centres, so one duplicate chain kept two documents."""
    rng = np.random.default_rng(8)
    for _ in range(3000):
        n = int(rng.integers(2, 12))
        u, v = rng.integers(0, n, int(rng.integers(1, 2 * n))), rng.integers(0, n, int(rng.integers(1, 2 * n)))
        u, v = u[: min(len(u), len(v))], v[: min(len(u), len(v))]
        if (u == v).all():
            continue
        labels = components_in_memory(pd.DataFrame({"u": u, "v": v}))
        assert dict(zip(labels["node"].tolist(), labels["root"].tolist(), strict=True)) == scipy_labels(u, v), (u, v)
    path = components_in_memory(pd.DataFrame({"u": [0, 2, 3, 4], "v": [2, 3, 4, 1]}))
    assert sorted(path.itertuples(index=False, name=None)) == [(1, 0), (2, 0), (3, 0), (4, 0)]


def test_rounds_on_a_dask_cluster_find_scipys_components(tmp_path: Path) -> None:
    import dask.dataframe as dd
    from distributed import Client

    from pipeline.cluster import local_cluster
    from pipeline.components import connected_components
    from pipeline.frame_runs import OnCluster

    u, v = shaped_graph(np.random.default_rng(5), 30_000)
    small = np.random.default_rng(9).integers(0, 12, (2, 400)) * 1000 + 10**12  # many out-of-order small paths
    u, v = np.concatenate([u, small[0]]), np.concatenate([v, small[1]])
    edges = dd.from_pandas(pd.DataFrame({"u": u, "v": v}), npartitions=6)
    with local_cluster(2) as cluster, Client(cluster) as client:
        labels, rounds = connected_components(OnCluster(client, str(tmp_path)), edges, 6)
        found = labels.compute()
    assert len(found) == found["node"].nunique(), "one centre per node"
    assert dict(zip(found["node"].tolist(), found["root"].tolist(), strict=True)) == scipy_labels(u, v)
    assert rounds.edges == len(set(zip(u.tolist(), v.tolist(), strict=True)) - {(x, x) for x in u.tolist()})
    assert 2 <= len(rounds.seconds) <= 12, "a 300-node chain needs about log2(300) rounds"


def _write_jsonl(path: Path, texts: list[str], prefix: str) -> None:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "text": t}) + "\n" for i, t in enumerate(texts)))


def test_a_dedup_job_decides_the_same_in_one_task_and_in_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step of a small job runs as one task (the synchronous scheduler on a worker) and clusters its graph
    in memory; forced through the rounds, and then spread over the cluster (shuffles of several partitions, P2P),
    every output is the same bytes, and the cluster table names the kept document on every row."""
    import pipeline.dedup
    from pipeline.runner import run_workflow
    from schemas.spec import parse_spec

    originals = real_paragraphs(80)
    (tmp_path / "in").mkdir()
    _write_jsonl(tmp_path / "in" / "a.jsonl", originals, "orig-")
    _write_jsonl(tmp_path / "in" / "b.jsonl", ["  " + t.upper() for t in originals[:15]], "copy-")
    edits = [t.replace(" ", "  ", 3).split(" ", 1)[1] + " and a few words more" for t in originals[15:35]]
    _write_jsonl(tmp_path / "in" / "c.jsonl", edits + [e + " again" for e in edits[:10]], "edit-")

    def run(name: str) -> Path:
        spec = parse_spec({"input": {"url": str(tmp_path / "in"), "partition_bytes": 8192},
                           "output": {"url": str(tmp_path / name)},
                           "stages": [{"stage": "exact_dedup"}, {"stage": "minhash_dedup"}]})  # fmt: skip
        run_workflow(spec, workers=2, show_progress=False)
        return tmp_path / name

    one = run("one-task")
    monkeypatch.setattr(pipeline.dedup, "ONE_TASK_EDGES", 0)
    rounds = run("rounds")
    graph = json.loads((rounds / "dedup" / "graph.json").read_text())
    first = json.loads((one / "dedup" / "graph.json").read_text())
    assert first["one_task"] and first["step_in_one_task"] and not graph["one_task"] and graph["step_in_one_task"]
    assert graph["rounds"] >= 1 and graph["verified_edges"] >= 25 and graph["candidate_pairs"] >= 25
    monkeypatch.setattr(pipeline.dedup, "DOCUMENTS_PER_PARTITION", 40)  # 125 documents: 4 partitions a shuffle
    spread = run("spread")
    spread_graph = json.loads((spread / "dedup" / "graph.json").read_text())
    assert not spread_graph["one_task"] and not spread_graph["step_in_one_task"]
    for part in ("docs", "dedup/_decisions", "dedup/clusters.parquet", "megatron", "shards"):
        assert tree_bytes(one / part) == tree_bytes(rounds / part) == tree_bytes(spread / part), part
    clusters = pq.read_table(rounds / "dedup" / "clusters.parquet").to_pandas()
    kept = clusters[clusters["kept"]].set_index("cluster")["id"]
    assert (clusters["kept_id"] == clusters["cluster"].map(kept)).all()
    dropped = clusters[~clusters["kept"]]
    assert len(dropped) >= 25 and dropped["kept_id"].str.startswith("orig-").all()


def _count_and_check(labels: pd.DataFrame) -> pd.DataFrame:
    """Labels in a partition, and how many point outside their node's block of 8 or not to its smallest."""
    node, root = labels["node"].to_numpy(), labels["root"].to_numpy()
    return pd.DataFrame({"n": [len(node)], "bad": [int(((root % 8 != 0) | (node // 8 != root // 8)).sum())]})


@pytest.mark.slow
def test_twenty_million_edges_on_two_workers_under_a_memory_limit(tmp_path: Path) -> None:
    """The size is the point: ~20M edges of stars, cliques and chains with known components, on two workers
    of 1.5 GiB each. One task holding the whole graph dies under that limit; the rounds do not, and find every
    component."""
    import dask
    import dask.dataframe as dd
    from distributed import Client, KilledWorker

    from pipeline.cluster import local_cluster
    from pipeline.components import connected_components
    from pipeline.frame_runs import OnCluster

    rng = np.random.default_rng(6)
    pieces, base, expected = [], 0, 0
    while sum(len(p) for p in pieces) < 20_000_000:  # blocks of 100k components of three shapes
        size = 8  # component k holds labels base + 8k .. base + 8k + 7, in a random order along its shape
        nodes = base + np.arange(100_000)[:, None] * size + rng.permuted(np.tile(np.arange(size), (100_000, 1)), axis=1)
        kind = len(pieces) % 3
        if kind == 0:
            pairs = np.stack([np.repeat(nodes.min(axis=1), size), nodes.ravel()], 1)
        elif kind == 1:
            i, j = np.triu_indices(size, 1)
            pairs = np.stack([nodes[:, i].ravel(), nodes[:, j].ravel()], 1)
        else:
            pairs = np.stack([nodes[:, :-1].ravel(), nodes[:, 1:].ravel()], 1)
        pieces.append(pairs[pairs[:, 0] != pairs[:, 1]])
        base += nodes.size
        expected += nodes.size - 100_000
    pairs = np.concatenate(pieces)
    frame = pd.DataFrame({"u": pairs[:, 0], "v": pairs[:, 1]})
    del pieces, pairs
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        local_cluster(2, "1.5GiB") as cluster,
        Client(cluster) as client,
    ):
        single = client.submit(components_in_memory, client.compute(dd.from_pandas(frame, npartitions=64)))
        with pytest.raises(KilledWorker):
            single.result()
        client.restart()  # a fresh cluster under the same limit
        edges = dd.from_pandas(frame, npartitions=64).persist()
        del frame
        labels, rounds = connected_components(OnCluster(client, str(tmp_path)), edges, 64)
        assert rounds.edges >= 20_000_000
        print(f"\n{rounds.edges} edges, {len(rounds.seconds)} rounds: {[round(t, 1) for t in rounds.seconds]} s")
        found = labels.map_partitions(_count_and_check).compute()
    assert found["n"].sum() == expected and found["bad"].sum() == 0

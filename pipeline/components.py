"""Connected components of the duplicate graph on Dask: rounds of large-star and small-star
(``stages.components``), each a shuffle of the edges by node, until every edge points to its component's centre.

Memory per task is one partition of edges; the graph is never gathered. A round costs two shuffles of the edges
plus a check (a join of the parents with the children); real duplicate graphs (stars of near-copies, a few
chains) converge in 2-4 rounds, a chain of n nodes in about log2(n).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dask.dataframe as dd
import pandas as pd

from pipeline.frame_runs import FrameRun
from stages.components import empty_edges, large_star_part, oriented, small_star_part, symmetric

EDGES_META = empty_edges()
#: Rounds after which the graph is declared too deep to be a duplicate graph (a chain of 2^64 nodes converges
#: in fewer): a guard against a bug looping forever, not a tuning knob.
MAX_ROUNDS = 64


class ComponentsError(RuntimeError):
    """The rounds did not converge."""


@dataclass
class Rounds:
    """What the rounds cost: edges in, seconds per round."""

    edges: int = 0
    seconds: list[float] = field(default_factory=list)


def connected_components(
    run: FrameRun, edges: dd.DataFrame, partitions: int, on_round: Callable[[int, float], None] | None = None
) -> tuple[dd.DataFrame, Rounds]:
    """``edges`` (columns ``u``, ``v``: int64 node labels) → ``(node, root)`` for every node that is not the
    smallest of its component, ``root`` being that smallest label, kept by ``run``; and the rounds'
    cost. ``partitions``: how many partitions each shuffle makes (the edges' memory per task follows it)."""
    rounds = Rounds()
    kept = run.keep(edges[["u", "v"]].map_partitions(_distinct, meta=EDGES_META), "components-0")
    current, rounds.edges = kept.frame, kept.rows
    while True:
        start = time.perf_counter()
        adjacent = current.map_partitions(symmetric, meta=EDGES_META).shuffle("u", npartitions=partitions)
        large = adjacent.map_partitions(large_star_part, meta=EDGES_META)
        down = large.map_partitions(oriented, meta=EDGES_META).shuffle("u", npartitions=partitions)
        name = f"components-{len(rounds.seconds) + 1}"
        current = run.keep(down.map_partitions(small_star_part, meta=EDGES_META), name).frame
        rounds.seconds.append(time.perf_counter() - start)
        if on_round is not None:
            on_round(len(rounds.seconds), rounds.seconds[-1])
        if _is_star_forest(run, current, partitions):
            return current.rename(columns={"u": "node", "v": "root"}), rounds
        if len(rounds.seconds) >= MAX_ROUNDS:
            raise ComponentsError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def _distinct(edges: pd.DataFrame) -> pd.DataFrame:
    edges = edges[edges["u"] != edges["v"]]
    return edges.drop_duplicates(ignore_index=True).astype({"u": "int64", "v": "int64"})


def _is_star_forest(run: FrameRun, edges: dd.DataFrame, partitions: int) -> bool:
    """``stages.components.is_star_forest`` over the whole graph: no parent is also a child, and no child has
    two parents (a shuffle by node for each)."""
    parents = edges[["v"]].rename(columns={"v": "node"}).drop_duplicates(split_out=partitions)
    children = edges[["u"]].rename(columns={"u": "node"})
    both = parents.merge(children, on="node", how="inner", npartitions=partitions)
    per_child = edges.drop_duplicates(split_out=partitions).groupby("u").size(split_out=partitions)
    counts = run.compute([both.map_partitions(len).sum(), (per_child > 1).sum()])
    return all(int(c) == 0 for c in counts)

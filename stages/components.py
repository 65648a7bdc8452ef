"""Connected components by alternating large-star and small-star (Kiveris et al., "Connected Components in
MapReduce and Beyond", SoCC 2014): the per-partition steps, pure functions over edge tables.

The graph is a table of edges ``(u, v)`` between int64 node labels (order keys). Each step sees, after a shuffle
by ``u``, every edge of the nodes of its partition, so its memory is its partition's edges, whatever the graph:

- **large-star**: for each node ``u`` with neighbourhood ``N(u)``, link every neighbour larger than ``u`` to
  ``m(u) = min(N(u) ∪ {u})``.
- **small-star**: for each node ``u``, with ``N'(u)`` its neighbours not larger than it, link ``u`` and every node
  of ``N'(u)`` to ``m = min(N'(u) ∪ {u})``.

Both keep the components of the graph; alternated, they turn it into stars whose centre is the smallest label
of the component, in O(log n) rounds on real graphs (the paper proves O(log² n)). ``pipeline.components`` runs
the rounds on Dask; they stop when the edges are stars (:func:`is_star_forest`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EDGES = {"u": "int64", "v": "int64"}


def empty_edges() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=t) for k, t in EDGES.items()})


def _edges(u: np.ndarray, v: np.ndarray) -> pd.DataFrame:
    """Distinct edges, no self-loops."""
    keep = u != v
    frame = pd.DataFrame({"u": u[keep].astype(np.int64), "v": v[keep].astype(np.int64)})
    return frame.drop_duplicates(ignore_index=True)


def _group_min(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows grouped by ``u``: the sort order and, per row in that order, the minimum of ``v`` over its group."""
    order = np.argsort(u, kind="stable")
    u, v = u[order], v[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    minima = np.minimum.reduceat(v, starts) if len(v) else v
    return order, np.repeat(minima, np.diff(np.r_[starts, len(u)]))


def symmetric(edges: pd.DataFrame) -> pd.DataFrame:
    """Both directions of every edge (large-star needs each node's whole neighbourhood)."""
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    return pd.DataFrame({"u": np.concatenate([u, v]), "v": np.concatenate([v, u])})


def _neighbourhood_minima(edges: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edges sorted by ``u``, and for each the smallest of ``u`` and every ``v`` of its group."""
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    order, minima = _group_min(u, v)
    u, v = u[order], v[order]
    return u, v, np.minimum(minima, u)


def large_star_part(adjacent: pd.DataFrame) -> pd.DataFrame:
    """Large-star on a partition holding every ``(u, v)`` of its nodes ``u`` (both directions present)."""
    if adjacent.empty:
        return empty_edges()
    u, v, m = _neighbourhood_minima(adjacent)
    larger = v > u
    return _edges(v[larger], m[larger])


def oriented(edges: pd.DataFrame) -> pd.DataFrame:
    """Each edge from its larger end to its smaller one (small-star groups by the larger end)."""
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    return pd.DataFrame({"u": np.maximum(u, v), "v": np.minimum(u, v)})


def small_star_part(down: pd.DataFrame) -> pd.DataFrame:
    """Small-star on a partition holding every oriented edge ``(u, v)``, ``v < u``, of its nodes ``u``."""
    if down.empty:
        return empty_edges()
    u, v, m = _neighbourhood_minima(down)
    heads = np.r_[True, u[1:] != u[:-1]]
    return _edges(np.concatenate([v, u[heads]]), np.concatenate([m, m[heads]]))


def components_in_memory(edges: pd.DataFrame) -> pd.DataFrame:
    """The same rounds in one process (the reference the tests hold the distributed run to, with scipy)."""
    current = _edges(edges["u"].to_numpy(), edges["v"].to_numpy())
    while True:
        current = small_star_part(oriented(large_star_part(symmetric(current))))
        if is_star_forest(current):
            return current.rename(columns={"u": "node", "v": "root"})


def is_star_forest(edges: pd.DataFrame) -> bool:
    """Every node has one parent at most and no parent has one: the edges are stars, each a component with its
    smallest node at the centre (small-star points every edge at a smaller node). Both conditions are needed:
    a node with two centres ("5 → 4", "5 → 1") passes the second alone."""
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    return not np.isin(v, u).any() and len(np.unique(u)) == len(u)

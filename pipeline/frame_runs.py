"""Where the dedup step's Dask DataFrames are computed: on the cluster, or inside one task.

A corpus whose every shuffle is one partition (``pipeline.dedup.DOCUMENTS_PER_PARTITION``) makes a graph of about
300 tasks of a few milliseconds each; on the cluster their scheduling took 1.0-1.7 s, more than the work. Such a
step runs as one task instead, its graph computed there by Dask's synchronous scheduler: the same expressions,
the same answers, the memory bound of one partition it already had. Wider steps run on the cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import dask
import dask.dataframe as dd
from distributed import Client, wait

from pipeline.waiting import gather_cancellable


class FrameRun(Protocol):
    """Persists frames and computes Dask collections (frames, scalars, delayed values)."""

    def persist(self, frame: dd.DataFrame) -> dd.DataFrame: ...

    def compute(self, items: list[Any]) -> list[Any]: ...


@dataclass(frozen=True)
class OnCluster:
    """The cluster's workers compute; waits are cancellable (``pipeline.waiting``)."""

    client: Client
    cancelled: Callable[[], bool] | None = None
    what: str = "dedup step"

    def persist(self, frame: dd.DataFrame) -> dd.DataFrame:
        """``frame`` persisted, once its tasks are done. The next expression is built only then: on Python 3.11
        a ``functools.cached_property`` holds one lock per property for every object, and dask-expr planning a
        frame in this thread while the in-process scheduler's offload thread still materialises the last graph
        deadlocked (each held the lock the other needed; ``refinery run`` hung with every process idle)."""
        frame = self.client.persist(frame)
        wait(frame)
        return frame

    def compute(self, items: list[Any]) -> list[Any]:
        return gather_cancellable(self.client, self.client.compute(items), self.cancelled, self.what)


class InThisThread:
    """Dask's synchronous scheduler in the calling thread (a worker's task): no scheduling cost per task."""

    def persist(self, frame: dd.DataFrame) -> dd.DataFrame:
        return frame.persist(scheduler="sync")

    def compute(self, items: list[Any]) -> list[Any]:
        return list(dask.compute(*items, scheduler="sync"))

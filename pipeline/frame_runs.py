"""Where the dedup step's Dask DataFrames are computed and kept between its phases: on the cluster, or inside
one task.

A corpus whose every shuffle is one partition (``pipeline.dedup.DOCUMENTS_PER_PARTITION``) makes a graph of about
300 tasks of a few milliseconds each; on the cluster their scheduling took 1.0-1.7 s, more than the work. Such a
step runs as one task instead, its graph computed there by Dask's synchronous scheduler: the same expressions,
the same answers, the memory bound of one partition it already had. Wider steps run on the cluster.

On the cluster, a frame the step needs again (candidates, verified edges, each round's edges) is written to the
job's scratch directory, a file per partition, and read back by the tasks that use it: kept in the workers'
memory (``persist``), it held the edges of the whole corpus spread over the workers, so a worker's memory grew
with the corpus (4M short documents: 0.1 GB of them per worker at the step's peak, 4x what 1M held).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import dask
import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
from dask import delayed
from distributed import Client

from pipeline.waiting import gather_cancellable
from storage.fs import join
from storage.parts import read_part, write_part


@dataclass(frozen=True)
class Kept:
    """A frame kept for the phases after the one that made it, and how many rows it has."""

    frame: dd.DataFrame
    rows: int


class FrameRun(Protocol):
    """Keeps frames between phases and computes Dask collections (frames, scalars, delayed values)."""

    def keep(self, frame: dd.DataFrame, name: str) -> Kept: ...

    def stage(self, frame: dd.DataFrame, name: str) -> dd.DataFrame: ...

    def compute(self, items: list[Any]) -> list[Any]: ...


@dataclass(frozen=True)
class OnCluster:
    """The cluster's workers compute; kept frames go to files under ``scratch`` (on the job's output
    filesystem, which every worker reaches); waits are cancellable (``pipeline.waiting``)."""

    client: Client
    scratch: str
    cancelled: Callable[[], bool] | None = None
    what: str = "dedup step"

    def keep(self, frame: dd.DataFrame, name: str) -> Kept:
        """``frame`` written a partition to a file under ``scratch/name`` by the task that computes it, and a
        frame reading them back. Every call waits for its tasks: the next expression is built only then (on
        Python 3.11 dask-expr planning a frame in this thread while the in-process scheduler's offload thread
        still materialised the last graph deadlocked on ``functools.cached_property``'s per-class lock)."""
        where = join(self.scratch, name)
        written = frame.map_partitions(_write_partition, where, meta=pd.Series(dtype="int64"))
        rows = self.compute([written])[0]
        urls = [_partition_url(where, k) for k in range(frame.npartitions)]
        meta = frame._meta
        parts = [delayed(_read_partition)(url, meta) for url in urls]
        return Kept(dd.from_delayed(parts, meta=meta, verify_meta=False), int(rows.sum()))

    def stage(self, frame: dd.DataFrame, name: str) -> dd.DataFrame:
        """A join's output that the next shuffle takes, kept in files: Dask runs every output task of a join
        before the next shuffle's transfers take their results, so each worker held its share of the whole
        output (0.26 GB at 4M short documents)."""
        return self.keep(frame, name).frame

    def compute(self, items: list[Any]) -> list[Any]:
        return gather_cancellable(self.client, self.client.compute(items), self.cancelled, self.what)


class InThisThread:
    """Dask's synchronous scheduler in the calling thread (a worker's task): no scheduling cost per task, kept
    frames in its memory (one partition each)."""

    def keep(self, frame: dd.DataFrame, name: str) -> Kept:
        frame = frame.persist(scheduler="sync")
        return Kept(frame, int(dask.compute(frame.map_partitions(len).sum(), scheduler="sync")[0]))

    def stage(self, frame: dd.DataFrame, name: str) -> dd.DataFrame:
        """Left to the next computation: one task runs one partition at a time anyway (materialising each join
        cost the pretrain benchmark's step 0.1 s)."""
        return frame

    def compute(self, items: list[Any]) -> list[Any]:
        return list(dask.compute(*items, scheduler="sync"))


def _partition_url(where: str, number: int) -> str:
    return join(where, f"part-{number:05d}.parquet")


def _write_partition(rows: pd.DataFrame, where: str, partition_info: dict | None = None) -> pd.Series:
    """Runs in the task that computed the partition: its rows to a file, and their count. Uncompressed: the
    file is read once, soon, by the same cluster, and signatures do not compress."""
    assert partition_info is not None, "dask passes each partition's number"
    table = pa.Table.from_pandas(rows, preserve_index=False)
    write_part(_partition_url(where, partition_info["number"]), table, compression="none")
    return pd.Series([len(rows)], dtype="int64")


def _read_partition(url: str, meta: pd.DataFrame) -> pd.DataFrame:
    """A kept partition as a frame of ``meta``'s columns and dtypes (Arrow-backed columns stay one buffer). A
    faithful copy for partitions that hold ``meta``'s dtypes, as Dask requires of them; not for columns of
    Python objects other than strings (lists, mixed bytes and text), which the step's frames do not have."""
    table = read_part(url).select(list(meta.columns))
    columns = {}
    for name, dtype in meta.dtypes.items():
        column = table.column(name)
        if isinstance(dtype, pd.ArrowDtype):
            columns[name] = pd.arrays.ArrowExtensionArray(column.cast(dtype.pyarrow_dtype))
        else:
            columns[name] = column.to_pandas()
    rows = pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))
    # pandas infers ``str`` for a column of strings: back to the frame's dtypes (``object`` for the edge kinds)
    return rows.astype({k: v for k, v in meta.dtypes.items() if not isinstance(v, pd.ArrowDtype)})

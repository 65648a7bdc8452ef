"""The keys a global dedup step works from, read from their files by the task that needs them.

The segment before a barrier writes one keys file per batch (order key, exact hash, MinHash signature, id,
source); an earlier job's index adds its parts. The step never holds these in worker memory between its
shuffles: each frame of the graph (``pipeline.dedup_graph``) reads only its columns of a file when its task
runs, so a worker's memory follows the step's partition size, not the corpus (holding every batch's keys took
a worker from 2.2 to 5.3 GB when the corpus went from 1M to 4M short documents).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.stages import MinHashDedupConfig
from stages.dedup import band_rows, order_keys, unpack_signatures
from storage.fs import open_input

#: Index part k gets the order keys of pseudo-partition BASE + k: all negative, so its documents come first.
INDEX_PARTITION_BASE = -(1 << 30)

#: The columns each frame reads (``order`` comes with all of them).
FRAME_COLUMNS = {
    "ids": ("id",),
    "documents": ("id", "sig"),
    "exact": ("high", "low"),
    "sigs": ("sig",),
    "bands": ("sig",),
}


@dataclass(frozen=True)
class KeysPart:
    """One batch's keys file (``partition``: its split), or part ``k`` of an earlier job's index (``index``:
    its order keys are made here, in pseudo-partition ``INDEX_PARTITION_BASE + k``)."""

    partition: int
    url: str
    index: bool = False


def read_table(part: KeysPart, columns: tuple[str, ...]) -> pa.Table:
    """``columns`` of a keys part (those it has) and its ``order`` keys."""
    with open_input(part.url, real=True) as handle:
        parquet = pq.ParquetFile(handle)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        table = parquet.read(columns=present if part.index else ["order", *present])
    if part.index:
        table = table.append_column("order", pa.array(order_keys(part.partition, table.num_rows)))
    return table


def read_keys(part: KeysPart, name: str, minhash: MinHashDedupConfig | None = None) -> pd.DataFrame:
    """One frame's rows from one keys part: ``ids`` (order, id), ``documents`` (order, id, sig: null for a
    document too short for one), ``exact`` (high, low, order: none from an index
    built without exact dedup), ``sigs`` (order, sig) or ``bands`` (bucket, order: needs ``minhash``)."""
    table = read_table(part, FRAME_COLUMNS[name])
    if name in ("ids", "documents"):
        ids = pd.arrays.ArrowExtensionArray(table.column("id"))
        rows = pd.DataFrame({"order": table.column("order").to_numpy(), "id": ids})
        if name == "documents":
            rows["sig"] = pd.arrays.ArrowExtensionArray(table.column("sig"))
        return rows
    if name == "exact":
        if "high" not in table.column_names:  # an index built by a job without exact_dedup
            return pd.DataFrame({k: pd.Series(dtype=t) for k, t in (("high", "uint64"), ("low", "uint64"),
                                                                    ("order", "int64"))})  # fmt: skip
        return pd.DataFrame({c: table.column(c).to_numpy() for c in ("high", "low", "order")})
    usable = table.filter(pc.is_valid(table.column("sig")))  # documents too short for a signature have none
    order = usable.column("order").to_numpy()
    # Arrow-backed, as the ids: one buffer per partition, not a Python object per row (4M signatures as bytes
    # objects made the step's joins peak at 3.3 GB per worker)
    sigs = pd.Series(pd.arrays.ArrowExtensionArray(usable.column("sig")), name="sig")
    if name == "sigs":
        return pd.DataFrame({"order": order, "sig": sigs})
    assert minhash is not None, "band keys need the MinHash settings"
    return band_rows(unpack_signatures(sigs), order, minhash)


def index_rows(part: KeysPart, exact: bool, dropped: pa.Array) -> pa.Table:
    """This batch's documents with a signature that survive dedup (``dropped``: the order keys its partition's
    decisions drop), as rows of the next index: sig, id, source and, with exact dedup, high and low."""
    columns = ("sig", "id", "source", "high", "low") if exact else ("sig", "id", "source")
    table = read_table(part, columns)
    keep = pc.and_(pc.is_valid(table.column("sig")), pc.invert(pc.is_in(table.column("order"), dropped)))
    return table.filter(keep).select(list(columns))

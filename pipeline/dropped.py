"""The text of dropped documents, kept for audit in ``OUT/dropped/`` (``output.dropped_text``).

``OUT/docs/`` says why each document went, but not what it said. Here a dropped document keeps its id, source,
line, stage, reason, text and, for a duplicate, the id of the copy kept. With ``sample`` (the default) each drop
reason keeps at most ``output.dropped_sample`` documents across the whole job: those whose id hashes lowest
(xxh3-64), so the sample is the same whatever the partitioning and a rerun picks the same documents. Every step is
bounded by the cap: a batch keeps its own lowest ``cap`` per reason, a split merges its batches the same way, and
the job's thresholds come from a tree of merges over the splits' hashes (one Dask task per pair), after which each
split's file is cut to them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from dask import delayed
from distributed import Client

from pipeline.partition import PartitionPlan
from pipeline.waiting import gather_cancellable
from schemas.spec import WorkflowSpec
from storage.fs import exists, join, read_bytes, write_bytes_atomic
from storage.parts import iter_parts, merge_parts, parquet_bytes

DROPPED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("line", pa.int64()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("text", pa.large_string()),
        ("kept_id", pa.string()),
        ("key", pa.uint64()),
    ]
)
CAPPED_MARKER = "_CAPPED"
#: A job of at most this many splits cuts its sample in one task: the tree of merges and the cuts are about three
#: tasks of milliseconds a split (0.15 s of scheduling for ten splits), and what one task holds is the ids and
#: hashes of at most the cap per reason per split.
ONE_TASK_SPLITS = 32


def dropped_rows(gone: pa.Table, reasons: pa.Array, stage: str) -> pa.Table:
    """The audit rows of a batch's dropped documents; ``kept_id`` from a dedup step's ``<stage>_kept_id``."""
    n = gone.num_rows
    kept = [c for c in gone.column_names if c.endswith("_kept_id")]
    kept_id = gone.column(kept[0]) if kept else pa.nulls(n, pa.string())
    keys = np.fromiter((xxhash.xxh3_64_intdigest(i.encode()) for i in gone.column("id").to_pylist()), np.uint64, n)
    columns = [gone.column("id"), gone.column("source"), gone.column("line"), pa.array([stage] * n, pa.string()),
               reasons, gone.column("text").cast(pa.large_string()), kept_id, pa.array(keys, pa.uint64())]  # fmt: skip
    return pa.Table.from_arrays([pa.chunked_array(c) if isinstance(c, pa.ChunkedArray) else c for c in columns],
                                schema=DROPPED_SCHEMA)  # fmt: skip


def lowest_per_reason(table: pa.Table, cap: int) -> pa.Table:
    """The ``cap`` rows of each reason whose keys are lowest (ties broken by id), sorted by reason then key."""
    if table.num_rows == 0:
        return table
    table = table.sort_by([("reason", "ascending"), ("key", "ascending"), ("id", "ascending")])
    reasons = table.column("reason").to_numpy(zero_copy_only=False)
    starts = np.r_[True, reasons[1:] != reasons[:-1]]
    rank = np.arange(len(reasons)) - np.maximum.accumulate(np.where(starts, np.arange(len(reasons)), 0))
    return table.filter(pa.array(rank < cap))


def merge_split(urls: list[str], dest: str, cap: int | None) -> int:
    """One split's dropped rows from its batches' parts (``cap``: at most that many per reason), written to
    ``dest``; returns the rows written. One part and the running sample are in memory at a time."""
    if cap is None:  # "all": the parts streamed into the file, one at a time
        return merge_parts(urls, dest, DROPPED_SCHEMA)
    kept = DROPPED_SCHEMA.empty_table()
    for part in iter_parts(urls):
        kept = lowest_per_reason(pa.concat_tables([kept, part]), cap)
    write_bytes_atomic(dest, parquet_bytes(kept))
    return kept.num_rows


def _keys(url: str) -> pa.Table:
    return pq.read_table(pa.BufferReader(read_bytes(url, real=True)), columns=["reason", "key", "id"])


def _lowest(cap: int, *tables: pa.Table) -> pa.Table:
    return lowest_per_reason(pa.concat_tables(tables), cap)


def _cut(url: str, thresholds: dict[str, tuple[int, str]]) -> int:
    """Rewrite one split's file without the rows above their reason's threshold (a no-op the second time)."""
    table = pq.read_table(pa.BufferReader(read_bytes(url, real=True)))
    keep = [
        reason not in thresholds or (key, doc) <= thresholds[reason]
        for reason, key, doc in zip(*(table.column(c).to_pylist() for c in ("reason", "key", "id")), strict=True)
    ]
    if all(keep):
        return table.num_rows
    table = table.filter(pa.array(keep, pa.bool_()))
    write_bytes_atomic(url, parquet_bytes(table))
    return table.num_rows


def dropped_capped(spec: WorkflowSpec) -> bool:
    """Whether ``OUT/dropped/`` is final: nothing to cut (none, all) or cut for this spec already."""
    marker = join(spec.output.url, "dropped", CAPPED_MARKER)
    if spec.output.dropped_text != "sample":
        return True
    return exists(marker) and read_bytes(marker, real=True).decode() == spec.fingerprint()


def cap_dropped(
    client: Client,
    spec: WorkflowSpec,
    plans: list[PartitionPlan],
    dropped: list[dict[str, int]],
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Cut ``OUT/dropped/`` to the job-wide sample: per reason the ``dropped_sample`` lowest keys of all splits.
    ``dropped``: each split's drops by reason (its report); a split's file holds at most the cap per reason, so
    when no reason adds up to more than the cap over the splits there is nothing to cut, and no task runs."""
    out = spec.output
    if dropped_capped(spec):
        return
    rows: Counter[str] = Counter()
    for counts in dropped:
        rows.update({reason: min(n, out.dropped_sample) for reason, n in counts.items()})
    if all(n <= out.dropped_sample for n in rows.values()):
        write_bytes_atomic(join(out.url, "dropped", CAPPED_MARKER), spec.fingerprint().encode())
        return
    urls = [join(out.url, "dropped", f"{plan.name}.parquet") for plan in plans]
    what = f"{spec.name} (dropped-text sample)"
    if len(urls) <= ONE_TASK_SPLITS:
        task = client.submit(_cap_in_one_task, urls, out.dropped_sample, pure=False)
        gather_cancellable(client, [task], cancelled, what)
    else:
        level = [delayed(_keys)(url) for url in urls]
        while len(level) > 1:  # a tree of merges: each task holds at most two samples
            level = [delayed(_lowest)(out.dropped_sample, *level[k : k + 2]) for k in range(0, len(level), 2)]
        [sample] = gather_cancellable(client, client.compute(level), cancelled, what)
        thresholds = _thresholds(sample, out.dropped_sample)
        gather_cancellable(client, [client.submit(_cut, url, thresholds, pure=False) for url in urls], cancelled, what)
    write_bytes_atomic(join(out.url, "dropped", CAPPED_MARKER), spec.fingerprint().encode())


def _thresholds(sample: pa.Table, cap: int) -> dict[str, tuple[int, str]]:
    """Each reason's largest (key, id) in the job-wide sample of ``cap`` per reason."""
    thresholds: dict[str, tuple[int, str]] = {}
    sample = lowest_per_reason(sample, cap)
    for reason, key, doc in zip(*(sample.column(c).to_pylist() for c in ("reason", "key", "id")), strict=True):
        thresholds[reason] = (key, doc)  # sorted by key: the last one is the reason's largest kept
    return thresholds


def _cap_in_one_task(urls: list[str], cap: int) -> None:
    """The merges and cuts of a job of few splits in one task: the keys of every split (at most ``cap`` rows per
    reason each) in memory, then each file cut in turn."""
    if not urls:
        return
    thresholds = _thresholds(pa.concat_tables([_keys(url) for url in urls]), cap)
    for url in urls:
        _cut(url, thresholds)

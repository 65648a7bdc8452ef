"""Split the input into partitions of about ``input.partition_bytes`` of text (less for a small corpus, see
:func:`split_target`), shaped by the data, not the files.

- Parquet: one partition per run of row groups adding up to the target (the footer says their uncompressed size).
- Uncompressed JSONL: byte ranges of the target size; a record belongs to the range where its first byte lies
  (``storage.readers.read_line_range``), and line numbers come from a count of newlines per range
  (:func:`number_lines`, one small task per range, run before the partitions).
- Compressed JSONL: a stream cannot be entered in the middle, so a big one is cut into ranges of its
  decompressed bytes (at most ``MAX_STREAM_SPLITS`` per codec); each range's task decompresses from the start,
  counting the newlines before its range (its line numbers) and parsing only its records.
- CSV (quoted fields may hold newlines), other compressed files and text files (one document each): a file is not
  cut; its task streams it in batches (``pipeline.segments``), so its size costs time on one core, not memory.
- Small files are coalesced, in sorted order and one format at a time, until the target or ``max_files`` is reached.

The plan is a pure function of the listing and the spec, so the same input and ``partition_bytes`` give the same
partitions (names, order, ranges): resume and byte-identical reruns follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client

from pipeline.partition import REFUSED, PartitionPlan
from pipeline.waiting import gather_cancellable
from schemas.spec import WorkflowSpec
from storage.decompress import compression_of, decompressed_size
from storage.fs import confined_to, list_inputs, open_input
from storage.readers import detect_format
from storage.streams import count_newlines

#: Assumed text bytes per stored byte of a compressed file (gzip/zstd/Parquet of prose are 3-5x), used only to
#: decide how many small files share a partition.
COMPRESSED_TEXT_RATIO = 4


#: A corpus smaller than ``SPLITS_WANTED`` x ``partition_bytes`` is cut into about ``SPLITS_WANTED`` splits (none
#: under ``MIN_SPLIT_BYTES``), so that a 64 MB corpus keeps every core busy instead of making one task. 2 MiB: the
#: pretrain chain runs about 3 MB/s per core, so 8 MiB splits left a 20 MB corpus three tasks on two cores, the
#: last one alone for a third of the job.
SPLITS_WANTED = 16
MIN_SPLIT_BYTES = 2 * 2**20


#: Ranges a compressed JSONL file is cut into at most. Range k decompresses k/n of the stream only to skip it, so
#: the waste grows with the square of the count: measured here, zstd skips 1 GB/s and gzip about 0.3 GB/s while
#: the tokenize job processes about 0.1 GB/s per core, which makes 4 (zstd) and 2 (gzip) ranges the fastest on
#: two cores (a 1 GB .jsonl.zst: 4 ranges, 0.4 s of skipping each on average, against 10 s of work).
MAX_STREAM_SPLITS = {"zstd": 4, "gzip": 2}


def split_target(partition_bytes: int, total_text: int) -> int:
    """Text per split: ``partition_bytes``, or less for a small corpus. A function of the input and the spec only
    (not of the cluster), so the plan, and the output, are the same on any number of workers."""
    return min(partition_bytes, max(total_text // SPLITS_WANTED, MIN_SPLIT_BYTES))


def _text_bytes(source: str, fmt: str, size: int) -> int:
    compressed = fmt == "parquet" or compression_of(source) is not None
    return size * COMPRESSED_TEXT_RATIO if compressed else size


def byte_ranges(size: int, target: int) -> list[tuple[int, int]]:
    """Equal byte ranges of about ``target`` bytes (their count rounded to the nearest): a file 5% over the target
    is one range, not a full one and a sliver, whose task, line count and output files cost as much as a full
    one's (16 files of 1.02x the target made 32 tasks, 16 of them 2% of a task's work)."""
    n = max(1, (2 * size + target) // (2 * target))
    return [(size * k // n, size * (k + 1) // n) for k in range(n)]


def stream_ranges(source: str, stored: int, target: int) -> list[tuple[tuple[int, int | None], int]]:
    """``((start, end), stored_share)`` per range of a big compressed JSONL file's decompressed bytes; empty when
    the file is to be read whole (small, or unreadable: its one task then quarantines it)."""
    codec = compression_of(source)
    if codec is None:
        return []
    try:
        with open_input(source) as handle:
            text = decompressed_size(handle, codec, stored, COMPRESSED_TEXT_RATIO)
    except OSError:
        return []
    n = min(-(-text // target), MAX_STREAM_SPLITS[codec])
    if n < 2:
        return []
    step = -(-text // n)
    return [((k * step, None if k == n - 1 else (k + 1) * step), stored * (k + 1) // n - stored * k // n)
            for k in range(n)]  # fmt: skip


def parquet_row_group_runs(source: str, target: int, stored: int) -> list[tuple[tuple[int, int], int, int]] | None:
    """``((first, last), first_line, stored_share)`` per run of row groups of about ``target`` uncompressed bytes
    (``stored_share``: the run's part of the file's ``stored`` bytes, for progress); None when the footer cannot be
    read (the file is then one partition, whose reader quarantines it)."""
    try:
        with open_input(source) as handle:
            meta = pq.read_metadata(handle)
    except (pa.ArrowException, OSError):
        return None
    total = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)) or 1
    runs, first, size, line, first_line, done = [], 0, 0, 1, 1, 0
    for group in range(meta.num_row_groups):
        info = meta.row_group(group)
        size += info.total_byte_size
        line += info.num_rows
        if size >= target or group == meta.num_row_groups - 1:
            through = stored * sum(meta.row_group(g).total_byte_size for g in range(group + 1)) // total
            runs.append(((first, group + 1), first_line, through - done))
            first, size, first_line, done = group + 1, 0, line, through
    if not runs:
        runs.append(((0, 0), 1, stored))
    runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + stored - done)
    return runs


def plan_partitions(spec: WorkflowSpec, roots: tuple[str, ...] = ()) -> list[PartitionPlan]:
    """The partitions of a job. ``roots`` confine a service job: local files whose real location lies outside them
    (symlinks), special files and files with undecodable names are never opened; they form one last partition that
    quarantines each of them."""
    listing = list_inputs(spec.input.url, roots)
    max_files = spec.input.max_files_per_partition
    total = sum(_text_bytes(f, detect_format(f, spec.input.format), n) for f, n in listing.sizes.items())
    target = split_target(spec.input.partition_bytes, total)
    plans: list[PartitionPlan] = []
    group: list[str] = []
    group_format, group_bytes = "", 0

    def add(sources: tuple[str, ...], fmt: str, **where: object) -> None:
        plans.append(PartitionPlan(len(plans), sources, fmt, roots, **where))

    def flush() -> None:
        nonlocal group, group_bytes
        if group:
            add(tuple(group), group_format, sizes=tuple(listing.sizes[s] for s in group))
        group, group_bytes = [], 0

    for source in listing.files:
        fmt = detect_format(source, spec.input.format)
        size = listing.sizes[source]
        runs = parquet_row_group_runs(source, target, size) if fmt == "parquet" and size * 2 > target else None
        if runs is not None and len(runs) > 1:
            flush()
            for groups, first_line, stored in runs:
                add((source,), fmt, row_groups=groups, first_line=first_line, sizes=(stored,))
        elif fmt == "jsonl" and compression_of(source) is None and len(ranges := byte_ranges(size, target)) > 1:
            flush()
            for start, end in ranges:
                add((source,), fmt, byte_range=(start, end), sizes=(end - start,))
        elif (
            fmt == "jsonl"
            and size * COMPRESSED_TEXT_RATIO > 2 * target
            and (ranges := stream_ranges(source, size, target))
        ):
            flush()
            for text_range, share in ranges:
                add((source,), fmt, text_range=text_range, stream_bytes=size, sizes=(share,))
        else:
            text = _text_bytes(source, fmt, size)
            if group and (fmt != group_format or group_bytes + text > target or len(group) >= max_files):
                flush()
            group.append(source)
            group_format, group_bytes = fmt, group_bytes + text
    flush()
    if listing.refused:
        names, reasons = zip(*listing.refused, strict=True)
        add(names, REFUSED, reasons=reasons)
    return plans


def _count_newlines(roots: tuple[str, ...], source: str, start: int, end: int) -> int:
    with confined_to(roots):
        return count_newlines(source, start, end)


def number_lines(
    client: Client, spec: WorkflowSpec, plans: list[PartitionPlan], cancelled: Callable[[], bool] | None = None
) -> list[PartitionPlan]:
    """Give each byte-range partition the line number of its first record: newlines are counted per range on the
    cluster (the file is read once, in parallel), then summed over the ranges before each one."""
    ranged = [p for p in plans if p.byte_range is not None]
    if not ranged:
        return plans
    prefix = spec.task_prefix()
    futures = [
        client.submit(_count_newlines, p.roots, p.sources[0], *p.byte_range, key=f"count-lines-{prefix}-{p.index}")
        for p in ranged
    ]
    counted = gather_cancellable(client, futures, cancelled, spec.name)
    counts = dict(zip((p.index for p in ranged), counted, strict=True))
    numbered, before = [], 0
    for plan in plans:
        if plan.byte_range is None:
            numbered.append(plan)
            continue
        if plan.byte_range[0] == 0:
            before = 0
            numbered.append(plan)
        else:
            numbered.append(replace(plan, first_line=2 + before))
        before += counts.get(plan.index, 0)
    return numbered

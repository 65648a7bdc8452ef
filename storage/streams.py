"""A split read as a sequence of bounded record batches: memory follows ``batch_bytes``, never the file's size.

- Uncompressed JSONL: sub-ranges of the split's byte range, each cut at record boundaries (``read_line_range``).
- Compressed JSONL: decompressed piece by piece (``StreamInflater``), lines cut as they arrive; a line longer than
  ``max_doc_bytes`` is not kept whole (its head is enough to quarantine it as ``too_large``).
- Parquet: ``iter_batches`` over the split's row groups, with a row count that makes about ``batch_bytes`` of text.
- CSV: Arrow's streaming CSV reader (quoted newlines allowed), over the raw or the decompressed stream.
- Text: one document per file, read up to ``max_doc_bytes``.

Every batch says how many stored bytes it accounts for (``RawBatch.consumed``), which drives progress.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from schemas.spec import InputSpec
from storage.decompress import StreamInflater, compression_of
from storage.fs import StorageError, local_refusal, open_input
from storage.readers import (
    MAX_BATCH_RECORDS,
    RawBatch,
    _Collector,
    _table_to_batch,
    concat_batches,
    iter_jsonl,
    read_text,
    unreadable,
)

READ_CHUNK = 1 << 20
#: A compressed stream that inflates beyond this ratio (and past ``BOMB_FLOOR`` bytes) is cut there and its rest
#: quarantined: real text compresses 3-10x, JSON with repeated keys rarely beyond 50x.
MAX_EXPANSION = 1000
BOMB_FLOOR = 1 << 26


def read_line_range(source: str, start: int, end: int, max_tail: int) -> bytearray:
    """The records of an uncompressed line-based file that start in ``[start, end)``: a record belongs to the
    range where its first byte lies, so consecutive ranges read every record exactly once. The last record is read
    on past ``end`` for at most ``max_tail`` bytes: a longer one is cut there (the reader quarantines it as
    ``too_large``), so memory stays bounded by the range, not by the longest line of the file.

    The range is read into one buffer in ``READ_CHUNK`` pieces and returned as it is, the bytes before the first
    record dropped in place (a bytearray drops its head without a copy): each copy of a batch costs a pass over
    fresh pages, and the JSON reader takes a bytearray as it takes bytes."""
    with open_input(source) as handle:
        lo = max(start - 1, 0)
        handle.seek(lo)
        data = _read_into(handle, end - lo)
        skip = 0
        if start > 0:
            newline = data.find(b"\n")
            if newline < 0 or start + newline >= end:  # no record starts in the range (a longer record spans it)
                return bytearray()
            skip = newline + 1
        limit = len(data) + max_tail
        while len(data) > skip and data[-1:] != b"\n" and len(data) < limit:  # finish the last record
            more = handle.read(min(READ_CHUNK, limit - len(data)))
            if not more:
                break
            cut = more.find(b"\n")
            data += more if cut < 0 else more[: cut + 1]
            if cut >= 0:
                break
    del data[:skip]
    return data


def _read_into(handle: BinaryIO, n: int) -> bytearray:
    """Up to ``n`` bytes (fewer at the end of the file), read in ``READ_CHUNK`` pieces into one buffer."""
    data = bytearray(n)
    view, got = memoryview(data), 0
    while got < n:
        chunk = handle.readinto(view[got : got + READ_CHUNK])
        if not chunk:
            break
        got += chunk
    view.release()
    del data[got:]
    return data


def count_newlines(source: str, start: int, end: int) -> int:
    """Newlines at byte positions ``[start - 1, end - 1)`` (``[0, end - 1)`` for the first range): summed over the
    ranges before one, plus 2, they give the line number of its first record (see ``pipeline.planner``)."""
    lo, hi = max(start - 1, 0), end - 1
    count = 0
    with open_input(source) as handle:
        handle.seek(lo)
        while lo < hi:
            chunk = handle.read(min(READ_CHUNK * 8, hi - lo))
            if not chunk:
                break
            count += chunk.count(b"\n")
            lo += len(chunk)
    return count


def _parse_lines(
    source: str, data: bytes | bytearray, cfg: InputSpec, line: int, consumed: int, problem: str | None = None,
    reason: str = "truncated_file",
) -> Iterator[RawBatch]:  # fmt: skip
    """JSONL records of ``data`` as batches of bounded record count; the last one carries ``problem`` (the
    stream's cut tail) and the ``consumed`` bytes."""
    batches = iter_jsonl(source, data, problem, cfg, line, reason)
    batch = next(batches)
    for following in batches:
        yield batch
        batch = following
    batch.consumed = consumed
    yield batch


def iter_line_range(
    source: str, start: int, end: int, first_line: int, cfg: InputSpec, batch_bytes: int
) -> Iterator[RawBatch]:
    """The JSONL records starting in ``[start, end)``, ``batch_bytes`` of the file at a time."""
    line = first_line
    for lo in range(start, end, batch_bytes):
        hi = min(lo + batch_bytes, end)
        data = read_line_range(source, lo, hi, cfg.max_doc_bytes + 1)
        for batch in _parse_lines(source, data, cfg, line, hi - lo):
            line += batch.n_input
            yield batch


def _inflated(source: str, handle: BinaryIO, size: int, chunk: int = READ_CHUNK) -> StreamInflater:
    inflater = StreamInflater(handle, compression_of(source) or "", chunk)
    inflater.limit = max(BOMB_FLOOR, size * MAX_EXPANSION)
    return inflater


class _RecordsInRange:
    """The decompressed bytes of the records that start in ``[start, end)`` of a stream (``end`` None: to its end),
    as ``read_line_range`` cuts a plain file: bytes before ``start`` are only counted (their newlines number the
    first record), the record that holds byte ``end - 1`` is finished past ``end``, then the stream is left.
    ``owns_tail``: the stream ended while this range was reading, so its fault (if any) is this range's to report;
    a stream that ends before the range belongs to an earlier one."""

    def __init__(self, pieces: Iterator[bytes], start: int, end: int | None) -> None:
        self.pieces, self.start, self.end = pieces, start, end
        self.skipped_lines = 0
        self.owns_tail = False

    def __iter__(self) -> Iterator[bytes]:
        pieces, pos = self.pieces, 0
        if self.start > 0:
            for piece in pieces:
                lo = max(self.start - 1 - pos, 0)
                newline = piece.find(b"\n", lo) if lo < len(piece) else -1
                if newline < 0:
                    self.skipped_lines += piece.count(b"\n")
                    pos += len(piece)
                    continue
                self.skipped_lines += piece.count(b"\n", 0, newline + 1)
                piece, pos = piece[newline + 1 :], pos + newline + 1
                break
            else:
                return  # the stream ends before the range
            if self.end is not None and pos >= self.end:
                return  # a record that starts before the range runs past its end
            pieces = itertools.chain([piece], pieces)
        for piece in pieces:
            if self.end is None or pos + len(piece) < self.end:
                yield piece
                pos += len(piece)
                continue
            newline = piece.find(b"\n", max(self.end - 1 - pos, 0))
            if newline >= 0:
                yield piece[: newline + 1]
                return
            yield piece
            pos += len(piece)
            for rest in pieces:  # finish the record that holds byte end - 1
                newline = rest.find(b"\n")
                yield rest if newline < 0 else rest[: newline + 1]
                if newline >= 0:
                    return
            break
        self.owns_tail = True


def iter_compressed_jsonl(
    source: str, size: int, cfg: InputSpec, batch_bytes: int, text_range: tuple[int, int | None] = (0, None),
    share: int | None = None,
) -> Iterator[RawBatch]:  # fmt: skip
    """A compressed JSONL file (or the records starting in ``text_range`` of its decompressed bytes), decompressed
    as a stream and parsed ``batch_bytes`` of text at a time. Complete lines move to the batch a piece at a time;
    only a line that spans pieces is assembled, and no more than ``max_doc_bytes + 1`` of it is kept (enough to
    quarantine it as ``too_large``). ``share``: the stored bytes this range stands for (progress), reported with
    its last batch."""
    cap = cfg.max_doc_bytes + 1
    with open_input(source) as handle:
        inflater = _inflated(source, handle, size, min(READ_CHUNK, batch_bytes))
        records = _RecordsInRange(iter(inflater), *text_range)
        buffer, pending, line, reported = bytearray(), bytearray(), None, 0
        for piece in records:
            line = line or records.skipped_lines + 1
            first = piece.find(b"\n")
            if first < 0:
                pending += piece[: max(cap - len(pending), 0)]
                continue
            last = piece.rfind(b"\n")
            pending += piece[: min(first, max(cap - len(pending), 0))]
            buffer += pending
            buffer += piece[first : last + 1]
            pending = bytearray(piece[last + 1 : last + 1 + cap])
            if len(buffer) >= batch_bytes:
                consumed = 0 if share is not None else inflater.consumed - reported
                for batch in _parse_lines(source, bytes(buffer), cfg, line, consumed):
                    line += batch.n_input
                    yield batch
                buffer.clear()
                reported = inflater.consumed
        problem = inflater.problem if records.owns_tail else None
        tail = bytes(buffer + pending)
        if problem is None and pending:
            tail += b"\n"  # the last record has no newline after it
        final = share if share is not None else size - reported
        yield from _parse_lines(source, tail, cfg, line or records.skipped_lines + 1, final, problem, inflater.reason)


class _HeldBackReader(io.RawIOBase):
    """A decompressed stream as a file object for Arrow's CSV reader. Bytes after the last newline are held back
    until the stream ends cleanly: a truncated file must not yield its cut last row as a record."""

    def __init__(self, inflater: StreamInflater) -> None:
        self.pieces = iter(inflater)
        self.inflater = inflater
        self.ready, self.held, self.dropped_tail = b"", b"", b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray) -> int:  # type: ignore[override]
        while not self.ready:
            piece = next(self.pieces, None)
            if piece is None:
                if self.inflater.problem is None:
                    self.ready, self.held = self.held, b""
                else:
                    self.dropped_tail, self.held = self.held, b""
                if not self.ready:
                    return 0
                break
            data = self.held + piece
            cut = data.rfind(b"\n") + 1
            self.ready, self.held = data[:cut], data[cut:]
        n = min(len(target), len(self.ready))
        target[:n], self.ready = self.ready[:n], self.ready[n:]
        return n


def iter_csv(source: str, size: int, cfg: InputSpec, batch_bytes: int) -> Iterator[RawBatch]:
    """A CSV file (plain or compressed) through Arrow's streaming reader, every column read as a string."""
    col = _Collector(source)

    def invalid_row(row: pcsv.InvalidRow) -> str:
        col.n_input += 1
        detail = f"CSV row has {row.actual_columns} columns, expected {row.expected_columns}"
        col.quarantine(row.number if row.number is not None else 0, "malformed_row", detail, raw=row.text.encode())
        return "skip"

    def open_stream(handle: BinaryIO) -> tuple[BinaryIO, _HeldBackReader | None]:
        if compression_of(source) is None:
            return handle, None
        reader = _HeldBackReader(_inflated(source, handle, size))
        return io.BufferedReader(reader, READ_CHUNK), reader

    parse = pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid_row)
    read = pcsv.ReadOptions(block_size=min(max(batch_bytes, 1 << 16), CSV_BLOCK_BYTES))
    row, reported = 1, 0
    if size == 0 and compression_of(source) is not None:
        yield unreadable(source, f"an empty file is not a {compression_of(source)} stream", "truncated_file")
        return
    try:
        with open_input(source) as handle:  # the header alone, so that every column can be read as bytes
            names = pcsv.open_csv(open_stream(handle)[0], read_options=read, parse_options=parse).schema.names
        col.bad.clear()
        col.n_input = 0
        convert = pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.binary()), strings_can_be_null=False)
        with open_input(source) as handle:
            stream, held = open_stream(handle)
            reader = pcsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
            for record_batch in reader:
                table = _utf8_rows(pa.Table.from_batches([record_batch]), col, row)
                batch = _table_to_batch(source, table, cfg, col, row, keep=table.column("__row").to_numpy())
                row += record_batch.num_rows
                position = held.inflater.consumed if held else handle.tell()
                batch.consumed, reported = max(position - reported, 0), max(position, reported)
                col = _Collector(source)
                yield batch
    except (pa.ArrowException, OSError, StorageError) as error:
        col.n_input += 1
        col.quarantine(row, "unreadable_file", f"not a readable CSV file: {error}")
        batch = col.batch()
        batch.consumed = size - reported
        yield batch
        return
    if held is not None and held.inflater.problem is not None:
        col.n_input += 1
        col.quarantine(row, held.inflater.reason, held.inflater.problem, raw=held.dropped_tail[:512])
    batch = col.batch()
    batch.consumed = size - reported
    yield batch


#: Arrow parses a CSV in blocks of this size at most: a row (quoted newlines included) must fit in one, and the
#: rows a block rejects are held as quarantine records until it is parsed.
CSV_BLOCK_BYTES = 4 << 20


def _utf8_rows(table: pa.Table, col: _Collector, first_row: int) -> pa.Table:
    """Binary CSV columns as strings; a row with a value that is not UTF-8 is quarantined (``invalid_utf8``), not
    the whole file. ``__row`` keeps each remaining row's position in the block, for its row number."""
    strings = pa.schema([(name, pa.string()) for name in table.column_names])
    positions = pa.array(np.arange(table.num_rows))
    try:
        return table.cast(strings).append_column("__row", positions)
    except pa.ArrowInvalid:
        pass
    bad = np.zeros(table.num_rows, bool)
    for column in table.columns:
        for k, value in enumerate(column.to_pylist()):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as error:
                if not bad[k]:
                    col.n_input += 1
                    col.quarantine(first_row + k, "invalid_utf8", f"invalid UTF-8 at byte {error.start}", raw=value)
                bad[k] = True
    good = pa.array(~bad)
    return table.filter(good).cast(strings).append_column("__row", positions.filter(good))


def iter_parquet(
    source: str, groups: tuple[int, int] | None, first_line: int, size: int, cfg: InputSpec, batch_bytes: int
) -> Iterator[RawBatch]:
    """Row groups ``[first, last)`` (all when None) of a Parquet file, about ``batch_bytes`` of data per batch;
    only the split's column chunks are read."""
    line, done = first_line, 0
    try:
        with open_input(source) as handle:
            parquet = pq.ParquetFile(handle)
            meta = parquet.metadata
            chosen = list(range(*(groups or (0, meta.num_row_groups))))
            rows = sum(meta.row_group(g).num_rows for g in chosen)
            data = sum(meta.row_group(g).total_byte_size for g in chosen)
            per_batch = max(1, min(rows, batch_bytes * rows // max(data, 1)) if rows else 1)
            for record_batch in parquet.iter_batches(batch_size=per_batch, row_groups=chosen, use_threads=False):
                table = pa.Table.from_batches([record_batch])
                batch = _table_to_batch(source, table, cfg, _Collector(source), line)
                line += table.num_rows
                share = size * (line - first_line) // max(rows, 1)
                batch.consumed, done = share - done, share
                yield batch
    except (pa.ArrowException, OSError, StorageError) as error:
        where = f"row groups {groups[0]}-{groups[1] - 1}" if groups else "file"
        batch = unreadable(source, f"{where} unreadable from row {line}: {error}", line=line)
        batch.consumed = size - done
        yield batch
        return
    if done < size:  # no rows: the file's bytes still count as read
        empty = concat_batches([])
        empty.consumed = size - done
        yield empty


def iter_text(source: str, size: int, cfg: InputSpec) -> Iterator[RawBatch]:
    """One document per file, read up to ``max_doc_bytes + 1`` bytes (more is quarantined as ``too_large``)."""
    with open_input(source) as handle:
        if compression_of(source) is None:
            data, inflater = handle.read(cfg.max_doc_bytes + 1), None
        else:
            inflater, data = _inflated(source, handle, size), bytearray()
            for piece in inflater:
                data += piece
                if len(data) > cfg.max_doc_bytes:
                    break
            data = bytes(data)
    complete = inflater is None or len(data) > cfg.max_doc_bytes
    problem = None if complete else inflater.problem
    batch = read_text(source, data, problem, cfg, inflater.reason if inflater else "truncated_file")
    batch.consumed = size
    yield batch


def iter_file(
    source: str, fmt: str, size: int, cfg: InputSpec, batch_bytes: int, roots: tuple[str, ...]
) -> Iterator[RawBatch]:
    """One whole input file as batches; a file that cannot be opened becomes one quarantine record."""
    if "://" not in source:
        why = local_refusal(source, roots)  # again on the worker: the file may have changed since planning
        if why is not None:
            yield unreadable(source, f"not read: {why}", consumed=size)
            return
    try:
        if fmt == "parquet":
            yield from iter_parquet(source, None, 1, size, cfg, batch_bytes)
        elif fmt == "csv":
            yield from iter_csv(source, size, cfg, batch_bytes)
        elif fmt == "text":
            yield from iter_text(source, size, cfg)
        elif compression_of(source) is None:
            yield from iter_line_range(source, 0, size, 1, cfg, batch_bytes)
        else:
            yield from iter_compressed_jsonl(source, size, cfg, batch_bytes)
    except StorageError as error:
        yield unreadable(source, f"cannot read file: {error}", consumed=size)


def coalesce(batches: Iterable[RawBatch], batch_bytes: int) -> Iterator[RawBatch]:
    """Consecutive small batches (small files) joined up to ``batch_bytes`` of text or ``MAX_BATCH_RECORDS``
    records, so stages see few big batches; a big batch passes through as it is. A joined batch never grows past
    either bound: the held batches go out before one that would push them over (joining a file's last 13 MiB
    batch with the next file's first 16 MiB made batches of twice ``batch_bytes``, and a worker's memory follows
    its batches)."""
    held: list[RawBatch] = []
    text = records = 0
    for batch in batches:
        size, count = batch.documents.column("text").nbytes, batch.n_input
        if held and (text + size > batch_bytes or records + count > MAX_BATCH_RECORDS):
            yield concat_batches(held)
            held, text, records = [], 0, 0
        held.append(batch)
        text += size
        records += count
        if text >= batch_bytes or records >= MAX_BATCH_RECORDS:
            yield concat_batches(held)
            held, text, records = [], 0, 0
    if held:
        yield concat_batches(held)

"""Streaming decompression that notices truncation and bounds every piece it hands out.

fsspec's zstd codec returns an empty stream for a truncated .zst file (so does python-zstandard's
``stream_reader``), and gzip raises only at the end, after the lines already yielded; both would lose data
silently. Here the decompressors are driven by hand: a missing end-of-stream marker is reported, so the reader
can quarantine the file's tail with a reason, and no call may inflate a small input into gigabytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import BinaryIO

import zstandard

COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}


def compression_of(url: str) -> str | None:
    lower = url.lower()
    return next((name for suffix, name in COMPRESSIONS.items() if lower.endswith(suffix)), None)


def strip_compression(url: str) -> str:
    lower = url.lower()
    for suffix in COMPRESSIONS:
        if lower.endswith(suffix):
            return url[: -len(suffix)]
    return url


#: Compressed bytes handed to the zstd decompressor per call. zstd has no output bound per call, so a small input
#: bounds it instead (a block of zeros expands ~32,000x: 4 KiB become at most ~128 MiB).
ZSTD_INPUT_CHUNK = 4096


def _until_fault(inflater: zlib._Decompress, data: bytes) -> Iterator[bytes]:
    """What ``inflater`` yields from ``data``, a byte of input at a time, up to the call that raises."""
    for k in range(len(data)):
        try:
            piece = inflater.decompress(data[k : k + 1])
        except zlib.error:
            return
        if piece:
            yield piece


class StreamInflater:
    """Decompress a file handle piece by piece, every piece at most ``chunk`` bytes, and say afterwards whether the
    stream ended cleanly (``problem``). Multi-member gzip and multi-frame zstd files are read through."""

    def __init__(self, handle: BinaryIO, compression: str, chunk: int) -> None:
        self.handle, self.compression, self.chunk = handle, compression, chunk
        self.problem: str | None = None
        self.reason = "truncated_file"  # the quarantine reason that goes with ``problem``
        self.consumed = 0  # compressed bytes read so far
        self.produced = 0  # decompressed bytes yielded so far
        self.limit: int | None = None  # decompressed bytes after which the stream is cut (a decompression bomb)

    def _read(self, n: int) -> bytes:
        data = self.handle.read(n)
        self.consumed += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        pieces = self._gunzip() if self.compression == "gzip" else self._unzstd()
        for piece in pieces:
            if self.limit is not None and self.produced + len(piece) > self.limit:
                self.problem = f"decompresses to more than {self.limit} bytes from {self.consumed}; cut there"
                self.reason = "decompression_limit"
                return
            if piece:
                self.produced += len(piece)
                yield piece

    def _end(self, complete: bool) -> None:
        """At the end of the file: say why the stream is not whole, if it is not."""
        if self.consumed == 0:
            self.problem = f"an empty file is not a {self.compression} stream"
        elif not complete:
            self.problem = f"{self.compression} stream ends before its end marker (truncated file)"

    def _gunzip(self) -> Iterator[bytes]:
        inflater, pending = zlib.decompressobj(wbits=47), b""
        while True:
            if not pending:
                pending = self._read(1 << 16)
                if not pending:
                    # A call capped at ``chunk`` may leave output inside zlib with no input left to push it out
                    # (up to ~258 bytes): drain it, or a truncated file loses the end of its last whole record.
                    while not inflater.eof and (held := inflater.decompress(b"", self.chunk)):
                        yield held
                    self._end(inflater.eof)
                    return
            if inflater.eof:  # the next member of a multi-member file
                inflater = zlib.decompressobj(wbits=47)
            saved = inflater.copy()
            try:
                yield inflater.decompress(pending, self.chunk)
            except zlib.error as error:
                # The failing call's output is lost with it; replay from the saved state in small steps so that
                # everything before the fault is kept, at every chunk size (a bad CRC comes after intact data).
                yield from _until_fault(saved, pending)
                self.problem = f"corrupt gzip stream: {error}"
                return
            pending = inflater.unconsumed_tail or inflater.unused_data

    def _unzstd(self) -> Iterator[bytes]:
        inflater, pending = zstandard.ZstdDecompressor().decompressobj(), b""
        while True:
            if not pending:
                pending = self._read(ZSTD_INPUT_CHUNK)
                if not pending:
                    self._end(inflater.eof)
                    return
            if inflater.eof:  # the next frame of a multi-frame file
                inflater = zstandard.ZstdDecompressor().decompressobj()
            try:
                out = inflater.decompress(pending)
            except zstandard.ZstdError as error:
                self.problem = f"corrupt zstd stream: {error}"
                return
            pending = inflater.unused_data if inflater.eof else b""
            for start in range(0, len(out), self.chunk):
                yield out[start : start + self.chunk]


def decompressed_size(handle: BinaryIO, compression: str, stored: int, ratio: int) -> int:
    """The decompressed size of a stream, for planning: a zstd frame header's content size when it has one, a
    gzip trailer's ISIZE (the size mod 2**32: the candidate nearest ``stored x ratio``), else ``stored x ratio``.
    Only the split count depends on it; a wrong guess costs balance, never records."""
    guess = stored * ratio
    try:
        if compression == "zstd":
            size = zstandard.frame_content_size(handle.read(18))
            return size if size > 0 else guess
        if compression == "gzip" and stored >= 18:
            handle.seek(stored - 4)
            isize = int.from_bytes(handle.read(4), "little")
            wraps = max(round((guess - isize) / 2**32), 0)
            return isize + wraps * 2**32
    except (zstandard.ZstdError, OSError, ValueError):
        return guess
    return guess

"""Whole-file decompression that notices truncation.

fsspec's zstd codec returns an empty stream for a truncated .zst file, and gzip raises only at the end, after
the lines already yielded; both would lose data silently. Here a file is decompressed in memory and a missing
end-of-stream marker is reported, so the reader can quarantine the file's tail with a reason.
"""

from __future__ import annotations

import zlib

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


def decompress(raw: bytes, compression: str | None) -> tuple[bytes, str | None]:
    """Return ``(data, problem)``; ``problem`` says why the stream ended early, else None."""
    if compression is None:
        return raw, None
    if compression == "gzip":
        return _gunzip(raw)
    return _unzstd(raw)


def _gunzip(raw: bytes) -> tuple[bytes, str | None]:
    out: list[bytes] = []
    rest = raw
    while rest:
        inflater = zlib.decompressobj(wbits=47)  # gzip or zlib header, one member at a time
        try:
            out.append(inflater.decompress(rest))
        except zlib.error as error:
            return b"".join(out), f"corrupt gzip stream: {error}"
        if not inflater.eof:
            return b"".join(out), "gzip stream ends before its end marker (truncated file)"
        rest = inflater.unused_data
    return b"".join(out), None


def _unzstd(raw: bytes) -> tuple[bytes, str | None]:
    out: list[bytes] = []
    rest = raw
    while rest:
        inflater = zstandard.ZstdDecompressor().decompressobj()
        try:
            out.append(inflater.decompress(rest))
        except zstandard.ZstdError as error:
            return b"".join(out), f"corrupt zstd stream: {error}"
        if not inflater.eof:
            return b"".join(out), "zstd stream ends before its end marker (truncated file)"
        rest = inflater.unused_data
    return b"".join(out), None

"""fsspec helpers: list inputs, write files atomically, and translate fsspec errors into ours."""

from __future__ import annotations

import posixpath
import uuid

import fsspec
from fsspec.core import url_to_fs


class StorageError(OSError):
    """An input or output location could not be read or written; the message names it."""


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as error:
        raise StorageError(f"cannot open {url!r}: {error}") from error


def _full_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path) if fs.protocol not in ("file", ("file", "local")) else path


def expand_inputs(urls: list[str]) -> list[str]:
    """Expand paths, globs and directories into a sorted list of file URLs (hidden files skipped)."""
    found: list[str] = []
    for url in urls:
        fs, path = filesystem(url)
        if fs.isdir(path):
            matches = [p for p in fs.find(path) if not posixpath.basename(p).startswith((".", "_"))]
        elif any(ch in path for ch in "*?["):
            matches = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.exists(path):
            matches = [path]
        else:
            raise StorageError(f"input {url!r} does not exist")
        if not matches:
            raise StorageError(f"input {url!r} matches no file")
        found.extend(_full_url(fs, p) for p in sorted(matches))
    return sorted(dict.fromkeys(found))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write to a temporary name beside ``url`` and rename, so readers never see a partial file."""
    fs, path = filesystem(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = f"{posixpath.dirname(path)}/.tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}"
    with fs.open(tmp, "wb") as handle:
        handle.write(data)
    fs.mv(tmp, path)


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as handle:
        return handle.read()


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def list_files(url: str, suffix: str = "") -> list[str]:
    fs, path = filesystem(url)
    if not fs.isdir(path):
        return []
    return sorted(_full_url(fs, p) for p in fs.ls(path, detail=False) if p.endswith(suffix))


def remove_temporaries(url: str) -> int:
    """Delete the ``.tmp-*`` files an interrupted job left under ``url``; returns how many."""
    fs, path = filesystem(url)
    if not fs.isdir(path):
        return 0
    stale = [p for p in fs.find(path) if posixpath.basename(p).startswith(".tmp-")]
    for p in stale:
        fs.rm_file(p)
    return len(stale)

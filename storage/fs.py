"""fsspec helpers: list inputs, write files atomically, and translate fsspec errors into ours."""

from __future__ import annotations

import os
import posixpath
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import BinaryIO

import fsspec
import xxhash
from fsspec.core import url_to_fs

from schemas.paths import is_within


class StorageError(OSError):
    """An input or output location could not be read or written; the message names it."""


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of a location. A plain path (no ``scheme://``) is always a local file, whatever
    it holds: fsspec's URL chaining (``a::b``) would otherwise open another location than the one named."""
    if "://" not in url:
        local = fsspec.filesystem("file")
        return local, local._strip_protocol(url)
    options = {"use_listings_cache": False} if url.startswith(("s3://", "s3a://")) else {}
    try:
        # Object stores: no cached listings. Workers write markers and parts the driver then looks for; a listing
        # cached earlier would hide them (an ``exists`` answered from a stale cache, a directory move that misses
        # files).
        return url_to_fs(url, **options)
    except (ImportError, ValueError) as error:
        raise StorageError(f"cannot open {url!r}: {error}") from error


def _full_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path) if fs.protocol not in ("file", ("file", "local")) else path


def display_name(path: str) -> str:
    """A file name that can be written anywhere (Arrow, JSON): undecodable bytes shown as ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def local_refusal(path: str, roots: tuple[str, ...] = ()) -> str | None:
    """Why a local input file must not be opened, or None: a name that is not UTF-8, a special file (a FIFO would
    block the reader forever), or - when ``roots`` confine the job - a real location outside them (symlinks)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8; rename the file"
    if roots and not any(is_within(os.path.realpath(path), root) for root in roots):
        return "it is a symbolic link to a location outside the data roots"
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        return f"cannot stat it: {error.strerror}"
    if not stat.S_ISREG(mode):
        return "it is not a regular file (a FIFO, socket or device)"
    return None


@dataclass(frozen=True)
class InputListing:
    """The files a job reads with their sizes in bytes, and the ones it refuses to open with the reason (they are
    quarantined)."""

    files: list[str]
    refused: list[tuple[str, str]]
    sizes: dict[str, int]


def list_inputs(urls: list[str], roots: tuple[str, ...] = ()) -> InputListing:
    """Expand paths, globs and directories into sorted file URLs (hidden files skipped); local files that
    :func:`local_refusal` rejects are listed apart, by their display name. Sizes come from the listing itself
    (one request per directory or glob on object stores, not one per file)."""
    found: dict[str, int] = {}
    refused: dict[str, str] = {}
    for url in urls:
        fs, path = filesystem(url)
        if fs.isdir(path):
            listed = fs.find(path, detail=True)
            matches = {p: i for p, i in listed.items() if not posixpath.basename(p).startswith((".", "_"))}
        elif any(ch in path for ch in "*?["):
            matches = {p: i for p, i in fs.glob(path, detail=True).items() if i.get("type") != "directory"}
        elif fs.exists(path):
            matches = {path: fs.info(path)}
        else:
            raise StorageError(f"input {url!r} does not exist")
        if not matches:
            raise StorageError(f"input {url!r} matches no file")
        for p in sorted(matches):
            why = local_refusal(p, roots) if is_local(fs) else None
            if why is None:
                found[_full_url(fs, p)] = int(matches[p].get("size") or 0)
            else:
                refused[display_name(p)] = why
    files = sorted(found)
    return InputListing(files, sorted(refused.items()), {f: found[f] for f in files})


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return fs.protocol in ("file", ("file", "local"))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def check_real_location(url: str) -> None:
    """Refuse a local location reached through a symbolic link (``StorageError``).

    Job outputs are resolved before a job starts (``pipeline.runner``), so a link found below one was planted
    there; following it would write, or delete, outside the output. The deepest existing ancestor is checked,
    before any directory is created through it."""
    fs, path = filesystem(url)
    if not is_local(fs):
        return
    existing = os.path.abspath(path)
    while not os.path.lexists(existing) and existing != os.path.dirname(existing):
        existing = os.path.dirname(existing)
    if os.path.realpath(existing) != existing:
        raise StorageError(f"{url!r}: {existing} is or passes through a symbolic link; refusing to write through it")


#: Bytes per write call. One write of tens of MB ran 10x slower than the same bytes in 1-4 MiB writes on this
#: machine's ext4 (0.16 s vs 0.014 s for 70 MB), and shard and part files are written in such pieces.
WRITE_CHUNK = 1 << 20


def write_chunked(handle: BinaryIO, data: bytes | memoryview) -> None:
    """``handle.write(data)`` in pieces of at most ``WRITE_CHUNK`` bytes."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), WRITE_CHUNK):
        handle.write(view[start : start + WRITE_CHUNK])


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write to a temporary name beside ``url`` and rename, so readers never see a partial file."""
    fs, path = filesystem(url)
    check_real_location(posixpath.dirname(path))
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = f"{posixpath.dirname(path)}/.tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}"
    with fs.open(tmp, "wb") as handle:
        write_chunked(handle, data)
    fs.mv(tmp, path)


#: The local data roots the reads of this thread are confined to (a service job's tasks, the explorer): set with
#: :func:`confined_to`, checked by :func:`open_input` on the descriptor it opened.
CONFINED_TO: ContextVar[tuple[str, ...]] = ContextVar("refinery_confined_to", default=())


@contextmanager
def confined_to(roots: tuple[str, ...]) -> Iterator[None]:
    """Local files opened inside the block must really lie in ``roots`` (no effect when there are none)."""
    token = CONFINED_TO.set(tuple(roots))
    try:
        yield
    finally:
        CONFINED_TO.reset(token)


def _opened_path(fd: int, path: str) -> str:
    """The real location of the file behind an open descriptor (Linux: its ``/proc/self/fd`` link)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def open_input(url: str, real: bool = False) -> BinaryIO:
    """A file opened for reading. A local file must be a regular file: it is opened without blocking and checked
    on the open descriptor (a FIFO swapped in after a check would block forever, a device never end). ``real``:
    the file is one of a job's own records (marker, manifest, index), so no symbolic link may lead to it."""
    fs, path = filesystem(url)
    if not is_local(fs):
        return fs.open(path, "rb")
    if real:
        check_real_location(posixpath.dirname(path))
    flags = os.O_RDONLY | os.O_NONBLOCK | (os.O_NOFOLLOW if real else 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise StorageError(f"cannot read {url!r}: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StorageError(f"cannot read {url!r}: not a regular file")
    roots = () if real else CONFINED_TO.get()  # a job's own records are opened without following any link
    # The check is made on what was opened, not on the name: a link swapped in between a check of the name and
    # the open (to /proc/self/environ, say) would otherwise be followed.
    if roots and not any(is_within(_opened_path(fd, path), root) for root in roots):
        os.close(fd)
        raise StorageError(f"cannot read {url!r}: it is outside the data roots")
    return os.fdopen(fd, "rb")


def file_digest(data: bytes | memoryview) -> str:
    """The digest a manifest records for a file: XXH3-128 in hex, what ``xxh128sum`` prints (and rsync checks
    transfers with). It is there to catch a shard damaged or cut short on its way to a training cluster, not
    tampering, and it runs at 30 GB/s here against 2 GB/s for SHA-256 (with SHA-NI): hashing a tokenize job's
    1.1 GB of ids took 7% of its CPU time as SHA-256."""
    return xxhash.xxh3_128(data).hexdigest()


class AtomicWriter:
    """A file written under a temporary name beside ``url`` and renamed into place on success (removed on
    failure), digesting what passes through (``file_digest``): for outputs written piece by piece (a shard of
    several hundred MB)."""

    def __init__(self, url: str) -> None:
        self.fs, self.path = filesystem(url)
        directory = posixpath.dirname(self.path)
        check_real_location(directory)
        self.fs.makedirs(directory, exist_ok=True)
        self.tmp = f"{directory}/.tmp-{uuid.uuid4().hex}-{posixpath.basename(self.path)}"
        self.digest = xxhash.xxh3_128()
        self.size = 0

    def __enter__(self) -> AtomicWriter:
        self.handle = self.fs.open(self.tmp, "wb")
        return self

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        n = memoryview(data).nbytes
        self.size += n
        write_chunked(self.handle, data)
        return n

    # What a file object offers, for writers (Arrow's) that take one; closing is left to the context manager.
    closed = False

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def __exit__(self, kind: object, *rest: object) -> None:
        self.handle.close()
        if kind is None:
            self.fs.mv(self.tmp, self.path)
        elif self.fs.exists(self.tmp):
            self.fs.rm_file(self.tmp)


def read_bytes(url: str, real: bool = False) -> bytes:
    """The whole content of a file, opened as :func:`open_input` does."""
    with open_input(url, real) as handle:
        return handle.read()


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def list_files(url: str, suffix: str = "") -> list[str]:
    fs, path = filesystem(url)
    if not fs.isdir(path):
        return []
    return sorted(_full_url(fs, p) for p in fs.ls(path, detail=False) if p.endswith(suffix))


def remove_tree(url: str) -> None:
    """Delete a directory a job made for itself (never through a link: it is checked first)."""
    fs, path = filesystem(url)
    if fs.exists(path):
        check_real_location(url)
        fs.rm(path, recursive=True)


def remove_temporaries(url: str) -> int:
    """Delete the ``.tmp-*`` files an interrupted job left under ``url``; returns how many."""
    fs, path = filesystem(url)
    if not fs.isdir(path):
        return 0
    check_real_location(url)
    stale = [p for p in fs.find(path) if posixpath.basename(p).startswith(".tmp-")]
    for p in stale:
        fs.rm_file(p)
    return len(stale)

"""Where a service job may write: never a data root, never over its own input, never in, over or beside another
job's output. The job store claims the output atomically (``JobStore.create``); these are the filesystem checks."""

from __future__ import annotations

import posixpath

from schemas.paths import GLOB_CHARS, is_within
from storage.fs import filesystem

JOB_RECORD = "_job.json"  # what every job output holds (pipeline.runner writes it first)


class PlacementError(ValueError):
    """The output location is not one a new job may claim; the message says why."""


def _literal_prefix(url: str) -> str:
    """The part of an input before its first glob character, cut back to a whole directory."""
    cut = min((url.index(ch) for ch in GLOB_CHARS if ch in url), default=len(url))
    return url if cut == len(url) else posixpath.dirname(url[:cut])


def check_output_placement(output: str, inputs: list[str], roots: tuple[str, ...]) -> None:
    for url in inputs:
        prefix = _literal_prefix(url)
        if is_within(output, prefix) or is_within(prefix, output):
            raise PlacementError(f"output {output!r} overlaps the job's input {url!r}")
    fs, path = filesystem(output)
    parent = posixpath.dirname(path.rstrip("/"))
    while parent and not any(is_within(root, fs.unstrip_protocol(parent) if "://" in output else parent)
                             for root in roots):  # fmt: skip
        if fs.exists(posixpath.join(parent, JOB_RECORD)):
            raise PlacementError(f"output {output!r} lies inside the output of another job ({parent})")
        parent = posixpath.dirname(parent)
    if fs.exists(path):
        if not fs.isdir(path):
            raise PlacementError(f"output {output!r} exists and is not a directory")
        if fs.ls(path, detail=False):
            raise PlacementError(f"output {output!r} exists and is not empty; name a new directory")

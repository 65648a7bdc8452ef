"""The MinHash signature index a job leaves in ``OUT/dedup/index/`` for later jobs to deduplicate against.

One Parquet file per partition (``id``, ``source``, ``sig`` and, with exact dedup, ``high``/``low``) and
``_INDEX.json`` with the MinHash settings, written last: an index without it is incomplete and refused.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.stages import MinHashDedupConfig
from storage.fs import check_real_location, exists, filesystem, join, list_files, read_bytes, write_bytes_atomic

INDEX_MARKER = "_INDEX.json"


class DedupIndexError(ValueError):
    """The named index is missing, incomplete or built with other MinHash settings."""


def index_settings(config: MinHashDedupConfig) -> dict[str, object]:
    return config.model_dump(mode="json", include={"ngram", "bands", "rows", "seed", "normalization"})


def index_parts(url: str, config: MinHashDedupConfig) -> list[str]:
    """The part files of a complete index built with the same MinHash settings as ``config``."""
    marker = join(url, INDEX_MARKER)
    if not exists(marker):
        raise DedupIndexError(f"dedup index {url!r} has no {INDEX_MARKER}: it does not exist or is incomplete")
    try:
        saved = json.loads(read_bytes(marker, real=True))
    except ValueError:
        raise DedupIndexError(f"dedup index {url!r}: {INDEX_MARKER} is not valid JSON") from None
    if not isinstance(saved, dict) or saved.get("settings") != index_settings(config):
        raise DedupIndexError(  # the saved settings are not echoed: the file may not be what it claims
            f"dedup index {url!r} was built with MinHash settings other than this job's "
            f"({index_settings(config)}); signatures would not be comparable"
        )
    return list_files(url, ".parquet")


def write_index_part(directory: str, name: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(join(directory, name), sink.getvalue().to_pybytes())


def commit_index(staging: str, final: str, config: MinHashDedupConfig, documents: int) -> None:
    """Move the staged index into place, then write its marker: readers never see a partial index."""
    check_real_location(final)
    check_real_location(staging)
    fs, final_path = filesystem(final)
    _, staging_path = filesystem(staging)
    if fs.exists(final_path):
        fs.rm(final_path, recursive=True)
    # File by file: on an object store a directory move copies the directory's own (absent) key and fails.
    fs.makedirs(final_path, exist_ok=True)
    for path in sorted(fs.find(staging_path)):
        fs.mv(path, f"{final_path}/{posixpath.relpath(path, staging_path)}")
    if fs.exists(staging_path):
        fs.rm(staging_path, recursive=True)
    marker = {"settings": index_settings(config), "documents": documents}
    write_bytes_atomic(join(final, INDEX_MARKER), json.dumps(marker, indent=1).encode())


def part_name(path: str) -> str:
    return posixpath.basename(path)

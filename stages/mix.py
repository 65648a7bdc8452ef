"""The mix stage: sort documents into weighted buckets and decide, deterministically, how often each is packed.

Documents are not copied here: ``mix_copies`` (0, 1, 2, …) tells ``pack`` how many times to lay a document out,
so ``OUT/docs/`` keeps one row per input document and the funnel stays an account of documents.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.document import DROP_REASON
from schemas.stages import MixConfig
from stages.minhash import _mix, word_hashes

MIX_BUCKET = "mix_bucket"
MIX_COPIES = "mix_copies"


class MixSelectorError(ValueError):
    """A weight key names a column the batch does not have."""


def select(table: pa.Table, key: str) -> pa.ChunkedArray | pa.Array:
    """Boolean mask of the documents a weight key selects."""
    if "~" in key:
        column, needle = key.split("~", 1)
        return pc.match_substring(_column(table, column or "source", key), needle)
    if "!=" in key:
        column, value = key.split("!=", 1)
        return pc.fill_null(pc.not_equal(_column(table, column, key).cast(pa.string()), value), True)
    if "=" in key:
        column, value = key.split("=", 1)
        return pc.fill_null(pc.equal(_column(table, column, key).cast(pa.string()), value), False)
    return pc.fill_null(pc.equal(_column(table, "domain", key).cast(pa.string()), key), False)


def _column(table: pa.Table, name: str, key: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise MixSelectorError(
            f"mix weight {key!r} needs the column {name!r}, which no earlier stage added "
            f"(domain comes from the tags stage, lang from the language stage)"
        )
    return table.column(name)


def uniform(ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """A number in [0, 1) per document id, the same on every run and worker."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    with np.errstate(over="ignore"):
        h = _mix(word_hashes(ids) ^ _mix(np.full(len(ids), seed + 1, np.uint64)))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def mix(table: pa.Table, config: MixConfig) -> pa.Table:
    n = table.num_rows
    bucket = np.full(n, "other", dtype=object)
    weight = np.full(n, config.default_weight)
    open_ = np.ones(n, bool)
    for key, w in config.weights.items():
        hit = np.asarray(select(table, key).to_numpy(zero_copy_only=False), bool) & open_
        bucket[hit], weight[hit] = key, w
        open_ &= ~hit
    if config.apply == "blend":  # the trainer samples the mix: every document once, in its bucket's prefix
        copies = np.ones(n, np.int64)
    else:
        whole = np.floor(weight)
        copies = (whole + (uniform(table.column("id"), config.seed) < weight - whole)).astype(np.int64)
    reason = np.where(copies == 0, "mix:downsampled", None)
    table = table.append_column(MIX_BUCKET, pa.array(bucket.tolist(), pa.string()))
    table = table.append_column(MIX_COPIES, pa.array(copies))
    return table.append_column(DROP_REASON, pa.array(reason.tolist(), pa.string()))

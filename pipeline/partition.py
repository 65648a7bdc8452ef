"""A partition (split): what one task reads, and the rows it leaves in ``OUT/docs/`` for each document.

The planner (``pipeline.planner``) makes them, the segment tasks (``pipeline.segments``) run them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from schemas.document import DROP_REASON, N_TOKENS, TOKEN_IDS

#: Columns of a document batch that are too big for ``OUT/docs/``; every other column is a tag and is kept.
HEAVY_COLUMNS = {"text", TOKEN_IDS, DROP_REASON, "loss_mask", "reasoning", "answer", "prompt_text"}


#: The format of the partition that holds the input files a job refuses to open (each becomes a quarantine record).
REFUSED = "refused"


@dataclass(frozen=True)
class PartitionPlan:
    index: int
    sources: tuple[str, ...]
    format: str
    #: Local data roots that confine a service job (checked again when the worker opens each file).
    roots: tuple[str, ...] = ()
    #: For a REFUSED partition: why each source is not read.
    reasons: tuple[str, ...] = ()
    #: Part of one uncompressed line-based file: the records starting in ``[start, end)`` of its bytes.
    byte_range: tuple[int, int] | None = None
    #: Part of one compressed JSONL file: the records starting in ``[start, end)`` of its decompressed bytes (end
    #: None: to the stream's end). Its task decompresses from the file's start, only counting what lies before.
    text_range: tuple[int, int | None] | None = None
    #: Stored size of the whole file a ``text_range`` split reads (its decompression-bomb bound).
    stream_bytes: int = 0
    #: Part of one Parquet file: row groups ``[first, last)``.
    row_groups: tuple[int, int] | None = None
    #: Line (row) number of the partition's first record in its file.
    first_line: int = 1
    #: Stored bytes of each source that this partition reads (its share of the file for a range or row groups).
    sizes: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"


def doc_records(table: pa.Table, status: pa.Array | str, stage: str | None) -> pa.Table:
    """Rows for ``OUT/docs/``: provenance, size, fate, and every tag column a stage added."""
    n = table.num_rows
    columns = {
        "id": table.column("id"),
        "source": table.column("source"),
        "line": table.column("line"),
        "n_chars": pc.utf8_length(table.column("text")).cast(pa.int64()),
        "n_tokens": table.column(N_TOKENS) if N_TOKENS in table.column_names else pa.nulls(n, pa.int64()),
        "status": pa.array([status] * n, pa.string()) if isinstance(status, str) else status,
        "stage": pa.array([stage] * n, pa.string()),
    }
    for name in table.column_names:
        if name not in HEAVY_COLUMNS and name not in columns:
            columns[name] = table.column(name)
    return pa.table(columns)

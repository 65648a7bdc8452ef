"""Arrow schemas of a document batch, a quarantine batch and a packed-sequence shard.

Every module that builds or reads these tables imports them from here, so the shape of a document is
described exactly once.
"""

from __future__ import annotations

import pyarrow as pa

#: Columns every document batch carries from ingest onwards. Stages add columns (``token_ids``,
#: ``n_tokens``, tags) but never remove these.
DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        # 1-based line (JSONL, text) or record (CSV data row, Parquet row) number inside ``source``.
        pa.field("line", pa.int64(), nullable=False),
    ]
)

#: Column a per-batch stage sets to a reason string to drop a row; null means the row is kept.
DROP_REASON = "drop_reason"

#: Token ids of a document, added by the tokenize stage. int32 because DeepSeek's 128,815 ids
#: overflow uint16 (the bug that cost users of other tools their data).
TOKEN_IDS = "token_ids"
N_TOKENS = "n_tokens"

#: Input records that could not become documents, with the reason and where they came from.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        # The first bytes of the raw record, decoded with replacement characters, for the audit.
        pa.field("raw", pa.string()),
    ]
)

#: One row per packed training sequence (the Parquet shard format).
SEQUENCE_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        # Document boundaries inside the sequence: [0, end_1, ..., end_k]; padding lies after end_k.
        pa.field("cu_seqlens", pa.list_(pa.int32()), nullable=False),
        # Id of the document each piece between two boundaries belongs to.
        pa.field("doc_ids", pa.list_(pa.string()), nullable=False),
        pa.field("n_pad", pa.int32(), nullable=False),
    ]
)

#: One row per input document in ``OUT/docs/``: provenance, size and fate. Stages may add tag columns.
DOC_RECORD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("n_chars", pa.int64(), nullable=False),
        pa.field("n_tokens", pa.int64()),
        # "kept", or the reason of the stage that dropped the document.
        pa.field("status", pa.string(), nullable=False),
        pa.field("stage", pa.string()),
    ]
)

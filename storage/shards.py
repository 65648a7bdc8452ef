"""Write one packed-sequence shard in each configured format and describe it for the manifest.

Files go to temporary names and are renamed when complete (``write_bytes_atomic``), so a crashed or killed
task never leaves a half shard under a final name.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import ShardEntry
from storage.fs import join, write_bytes_atomic
from storage.megatron import encode_indexed


def _list_values(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    array = column.combine_chunks()
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    return values, np.diff(offsets)


def shard_files(table: pa.Table, formats: list[str]) -> dict[str, bytes]:
    """File suffix → bytes for one shard. Parquet writes are deterministic (no timestamps in metadata)."""
    files: dict[str, bytes] = {}
    if "megatron" in formats:
        tokens, lengths = _list_values(table.column("input_ids"))
        files[".bin"], files[".idx"] = encode_indexed(tokens.astype(np.int32), lengths)
        # Document boundaries as a second indexed dataset: sequence i holds cu_seqlens of packed sequence i.
        cu, cu_lengths = _list_values(table.column("cu_seqlens"))
        files[".cu_seqlens.bin"], files[".cu_seqlens.idx"] = encode_indexed(cu.astype(np.int32), cu_lengths)
        if "loss_mask" in table.column_names:  # SFT: 1 where the loss counts, beside the tokens
            mask, mask_lengths = _list_values(table.column("loss_mask"))
            files[".loss_mask.bin"], files[".loss_mask.idx"] = encode_indexed(mask.astype(np.int8), mask_lengths)
    if "parquet" in formats:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd", use_dictionary=False, row_group_size=1024)
        files[".parquet"] = buffer.getvalue()
    return files


def write_shard(shards_url: str, name: str, partition: int, table: pa.Table, formats: list[str]) -> ShardEntry:
    digests: dict[str, str] = {}
    for suffix, data in shard_files(table, formats).items():
        write_bytes_atomic(join(shards_url, name + suffix), data)
        digests[name + suffix] = hashlib.sha256(data).hexdigest()
    n_pad = table.column("n_pad").to_numpy()
    n_tokens = sum(len(chunk.values) for chunk in table.column("input_ids").chunks) if table.num_rows else 0
    documents = table.column("doc_ids").combine_chunks().values if table.num_rows else pa.array([], pa.string())
    return ShardEntry(
        shard=name,
        partition=partition,
        sequences=table.num_rows,
        tokens=int(n_tokens - n_pad.sum()),
        padding=int(n_pad.sum()),
        documents=len(documents.unique()),
        files=dict(sorted(digests.items())),  # sorted, as the JSON completion marker stores them
    )


class ShardWriter:
    """Shards of one split, written as packed sequences arrive: a shard is cut every ``max_sequences``
    sequences, so memory holds at most one shard, whatever the split's size."""

    def __init__(self, shards_url: str, prefix: str, partition: int, formats: list[str], max_sequences: int) -> None:
        self.shards_url, self.prefix, self.partition = shards_url, prefix, partition
        self.formats, self.max_sequences = formats, max_sequences
        self.held: list[pa.Table] = []
        self.n_held = 0
        self.entries: list[ShardEntry] = []

    def add(self, sequences: pa.Table) -> None:
        if sequences.num_rows:
            self.held.append(sequences)
            self.n_held += sequences.num_rows
        while self.n_held >= self.max_sequences:
            self._write(self.max_sequences)

    def close(self) -> list[ShardEntry]:
        if self.n_held:
            self._write(self.n_held)
        return self.entries

    def _write(self, n: int) -> None:
        table = pa.concat_tables(self.held)
        name = f"{self.prefix}-{len(self.entries):04d}"
        self.entries.append(write_shard(self.shards_url, name, self.partition, table.slice(0, n), self.formats))
        rest = table.slice(n)
        self.held, self.n_held = ([rest] if rest.num_rows else []), rest.num_rows

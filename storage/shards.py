"""Write one packed-sequence shard in each configured format and describe it for the manifest.

Files go to temporary names and are renamed when complete (``AtomicWriter``), so a crashed or killed task never
leaves a half shard under a final name. Token columns are streamed chunk by chunk, so writing a shard costs
little memory beyond the sequences it holds.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.manifest import ShardEntry
from storage.fs import AtomicWriter, join, write_bytes_atomic
from storage.megatron import encode_index

MEGATRON_COLUMNS = (("", "input_ids", np.int32), (".cu_seqlens", "cu_seqlens", np.int32),
                    (".loss_mask", "loss_mask", np.int8))  # fmt: skip


def _write_indexed(url: str, column: pa.ChunkedArray, dtype: type) -> tuple[str, int]:
    """Stream a list column as a Megatron ``.bin`` (chunk by chunk, no flat copy of the whole shard) and write
    its ``.idx``; returns the .bin's sha256 and byte size."""
    lengths = []
    with AtomicWriter(url) as out:
        for chunk in column.chunks:
            offsets = chunk.offsets.to_numpy()
            lengths.append(np.diff(offsets))
            values = chunk.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
            out.write(np.ascontiguousarray(values.astype(dtype, copy=False)).data)
    return out.sha256.hexdigest(), np.concatenate(lengths) if lengths else np.zeros(0, np.int64)


def write_shard(shards_url: str, name: str, partition: int, table: pa.Table, formats: list[str]) -> ShardEntry:
    """Write one shard in each format, file by file and chunk by chunk (Parquet writes are deterministic: no
    timestamps in the metadata)."""
    digests: dict[str, str] = {}
    if "megatron" in formats:
        for suffix, column, dtype in MEGATRON_COLUMNS:
            if column not in table.column_names:
                continue
            digests[f"{name}{suffix}.bin"], lengths = _write_indexed(join(shards_url, f"{name}{suffix}.bin"),
                                                                     table.column(column), dtype)  # fmt: skip
            index = encode_index(np.dtype(dtype), lengths)
            write_bytes_atomic(join(shards_url, f"{name}{suffix}.idx"), index)
            digests[f"{name}{suffix}.idx"] = hashlib.sha256(index).hexdigest()
    if "parquet" in formats:
        with AtomicWriter(join(shards_url, f"{name}.parquet")) as out:
            pq.write_table(table, pa.PythonFile(out, mode="w"), compression="zstd", use_dictionary=False,
                           row_group_size=1024)  # fmt: skip
        digests[f"{name}.parquet"] = out.sha256.hexdigest()
    n_pad = table.column("n_pad").to_numpy()
    # list_value_length and flatten respect slices (a shard is often a slice of a longer run of sequences);
    # ``.values`` would not.
    n_tokens = int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0)
    documents = pc.count_distinct(table.column("doc_ids").combine_chunks().flatten()).as_py() if table.num_rows else 0
    return ShardEntry(
        shard=name,
        partition=partition,
        sequences=table.num_rows,
        tokens=int(n_tokens - n_pad.sum()),
        padding=int(n_pad.sum()),
        documents=documents,
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

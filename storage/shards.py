"""Write packed-sequence shards in each configured format, as sequences arrive, and describe them for the manifest.

A shard's files are open while its sequences come in (Megatron ``.bin`` files appended chunk by chunk, Parquet
row groups appended), so a worker holds one batch of sequences, not a whole shard. Files go to temporary names and
are renamed when the shard is complete (``AtomicWriter``): a crashed or killed task never leaves a half shard under
a final name. The ``.idx`` files, small, are written when the shard closes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.manifest import ShardEntry
from storage.fs import AtomicWriter, file_digest, join, write_bytes_atomic
from storage.megatron import encode_index

#: (file suffix, column, dtype) of the Megatron indexed datasets of a shard; loss_mask only for SFT.
MEGATRON_COLUMNS = (("", "input_ids", np.int32), (".cu_seqlens", "cu_seqlens", np.int32),
                    (".loss_mask", "loss_mask", np.int8))  # fmt: skip


class _OpenShard:
    """One shard's files while its sequences are written."""

    def __init__(self, shards_url: str, name: str, partition: int, formats: list[str], schema: pa.Schema) -> None:
        self.shards_url, self.name, self.partition = shards_url, name, partition
        self.megatron = [
            (suffix, column, dtype, AtomicWriter(join(shards_url, f"{name}{suffix}.bin")).__enter__(), [])
            for suffix, column, dtype in MEGATRON_COLUMNS
            if "megatron_packed" in formats and column in schema.names
        ]
        self.parquet_file = self.parquet = None
        if "parquet" in formats:
            self.parquet_file = AtomicWriter(join(shards_url, f"{name}.parquet")).__enter__()
            self.parquet = pq.ParquetWriter(pa.PythonFile(self.parquet_file, mode="w"), schema, compression="zstd",
                                            use_dictionary=False)  # fmt: skip
        self.sequences = self.tokens = self.padding = 0
        self.documents: set[str] = set()

    def write(self, table: pa.Table) -> None:
        for _, column, dtype, out, lengths in self.megatron:
            for chunk in table.column(column).chunks:
                offsets = chunk.offsets.to_numpy()
                lengths.append(np.diff(offsets))
                values = chunk.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
                out.write(np.ascontiguousarray(values.astype(dtype, copy=False)).data)
        if self.parquet is not None:
            self.parquet.write_table(table, row_group_size=1024)
        self.sequences += table.num_rows
        # list_value_length and flatten respect slices (a shard often starts inside a batch); ``.values`` would not
        self.tokens += int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0)
        self.padding += int(pc.sum(table.column("n_pad")).as_py() or 0)
        self.documents.update(table.column("doc_ids").combine_chunks().flatten().unique().to_pylist())

    def close(self) -> ShardEntry:
        digests: dict[str, str] = {}
        for suffix, _, dtype, out, lengths in self.megatron:
            out.__exit__(None, None, None)
            digests[f"{self.name}{suffix}.bin"] = out.digest.hexdigest()
            index = encode_index(np.dtype(dtype), np.concatenate(lengths) if lengths else np.zeros(0, np.int64))
            write_bytes_atomic(join(self.shards_url, f"{self.name}{suffix}.idx"), index)
            digests[f"{self.name}{suffix}.idx"] = file_digest(index)
        if self.parquet is not None:
            self.parquet.close()
            self.parquet_file.__exit__(None, None, None)
            digests[f"{self.name}.parquet"] = self.parquet_file.digest.hexdigest()
        return ShardEntry(
            shard=self.name,
            partition=self.partition,
            sequences=self.sequences,
            tokens=self.tokens - self.padding,
            padding=self.padding,
            documents=len(self.documents),
            files=dict(sorted(digests.items())),  # sorted, as the JSON completion marker stores them
        )


class ShardWriter:
    """Shards of one split, written as packed sequences arrive: a shard is cut every ``max_sequences``
    sequences; memory holds the current batch of sequences, whatever the shard or split size."""

    def __init__(self, shards_url: str, prefix: str, partition: int, formats: list[str], max_sequences: int) -> None:
        self.shards_url, self.prefix, self.partition = shards_url, prefix, partition
        self.formats, self.max_sequences = formats, max_sequences
        self.open: _OpenShard | None = None
        self.entries: list[ShardEntry] = []

    def add(self, sequences: pa.Table) -> None:
        while sequences.num_rows:
            if self.open is None:
                name = f"{self.prefix}-{len(self.entries):04d}"
                self.open = _OpenShard(self.shards_url, name, self.partition, self.formats, sequences.schema)
            room = self.max_sequences - self.open.sequences
            self.open.write(sequences.slice(0, room))
            sequences = sequences.slice(room)
            if self.open.sequences >= self.max_sequences:
                self.entries.append(self.open.close())
                self.open = None

    def close(self) -> list[ShardEntry]:
        if self.open is not None:
            self.entries.append(self.open.close())
            self.open = None
        return self.entries

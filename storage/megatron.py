"""Megatron-LM indexed dataset (``.bin`` + ``.idx``), the format megatron-core's ``IndexedDataset`` reads.

Layout of the ``.idx`` (megatron/core/datasets/indexed_dataset.py, ``_IndexWriter``): the magic
``MMIDIDX\\0\\0``, version u64 = 1, dtype code u8, sequence count u64, document count u64, int32 sequence
lengths, int64 byte pointers, int64 document indices. Tokens are int32 (code 4): DeepSeek's 128,815 ids do not
fit the uint16 that smaller vocabularies use.
"""

from __future__ import annotations

import struct

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {np.dtype(np.int8): 2, np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.uint16): 8}


def encode_indexed(values: np.ndarray, lengths: np.ndarray) -> tuple[bytes, bytes]:
    """``(.bin bytes, .idx bytes)`` for sequences given as one flat array and their lengths.

    Each sequence is its own document (document indices 0..n), as Megatron's preprocess tool writes a
    corpus of one-sequence documents.
    """
    dtype = np.dtype(values.dtype)
    if dtype not in DTYPE_CODES:
        raise TypeError(f"megatron shards need int8, int32, int64 or uint16 values, got {dtype}")
    lengths = np.asarray(lengths, np.int32)
    pointers = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))[:-1]]) * dtype.itemsize
    documents = np.arange(len(lengths) + 1, dtype=np.int64)
    idx = b"".join(
        [
            INDEX_HEADER,
            struct.pack("<Q", 1),
            struct.pack("<B", DTYPE_CODES[dtype]),
            struct.pack("<Q", len(lengths)),
            struct.pack("<Q", len(documents)),
            lengths.tobytes(),
            pointers.astype(np.int64).tobytes(),
            documents.tobytes(),
        ]
    )
    return np.ascontiguousarray(values).tobytes(), idx


def encode_index(dtype: np.dtype, lengths: np.ndarray) -> bytes:
    """The ``.idx`` of sequences of ``lengths`` values of ``dtype`` (their ``.bin`` is the values, flat)."""
    return encode_indexed(np.zeros(0, dtype), lengths)[1]

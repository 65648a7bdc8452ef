"""MinHash signatures and LSH band keys for a whole batch at once, in numpy.

Words are hashed straight from the Arrow UTF-8 buffer (a polynomial over the bytes, summed per word with
``np.add.reduceat``), shingles combine ``ngram`` consecutive word hashes, and each permutation is a
multiply-shift hash ``(a * x + b) >> 32`` whose minimum per document is a ``np.minimum.reduceat``. Nothing
loops per word or per shingle in Python; memory is bounded by processing shingles in blocks.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.stages import MinHashDedupConfig
from stages.normalize import normalize
from stages.words import split_whitespace

MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
SHINGLE_BLOCK = 8192
WORD_BLOCK = 1 << 20
POWERS = np.cumprod(np.full(64, 1099511628211, np.uint64), dtype=np.uint64)
EMPTY = np.uint32(0xFFFFFFFF)  # signature of a document with no shingle: never a candidate


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the bits of a weak hash (uint64 arithmetic wraps on purpose)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def word_hashes(words: pa.Array) -> np.ndarray:
    """64-bit hash of every string of a (flat, non-null) string array, computed from its byte buffer.

    Works through the array in blocks of ``WORD_BLOCK`` strings so that one enormous document does not
    need eight bytes of temporaries per byte of text at once.
    """
    words = words.cast(pa.large_string()) if not pa.types.is_large_string(words.type) else words
    out = np.zeros(len(words), np.uint64)
    for start in range(0, len(words), WORD_BLOCK):
        block = words.slice(start, WORD_BLOCK)
        offsets = np.frombuffer(block.buffers()[1], np.int64)[block.offset : block.offset + len(block) + 1]
        data = np.frombuffer(block.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        offsets = offsets - offsets[0]
        lengths = np.diff(offsets)
        # Byte i of a word weighs P^(i mod 64): long runs without spaces cost no huge power table.
        position = (np.arange(len(data), dtype=np.int64) - np.repeat(offsets[:-1], lengths)) & 63
        with np.errstate(over="ignore"):
            terms = (data.astype(np.uint64) + np.uint64(1)) * POWERS[position]
        if len(data):
            sums = np.add.reduceat(terms, np.minimum(offsets[:-1], len(data) - 1))
            sums[lengths == 0] = 0  # reduceat yields one element, not zero, for an empty range
        else:
            sums = np.zeros(len(block), np.uint64)
        out[start : start + len(block)] = _mix(sums ^ lengths.astype(np.uint64))
    return out


def shingle_hashes(text: pa.Array | pa.ChunkedArray, config: MinHashDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word n-gram and the document each belongs to (documents in order)."""
    # Splitting on whitespace runs makes the whitespace normalisation redundant here.
    steps = config.normalization.model_copy(update={"whitespace": False})
    words = split_whitespace(normalize(text, steps))
    if isinstance(words, pa.ChunkedArray):
        words = words.combine_chunks()
    flat = words.flatten()
    n_words = pc.list_value_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = pc.not_equal(flat, "")
    doc_of_word = np.repeat(np.arange(len(words)), n_words)[keep.to_numpy(zero_copy_only=False)]
    hashes = word_hashes(flat.filter(keep))
    n = config.ngram
    if len(hashes) < n:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    shingles = hashes[: len(hashes) - n + 1].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            shingles = _mix(shingles * np.uint64(0x9E3779B97F4A7C15) + hashes[k : len(hashes) - n + 1 + k])
    same_doc = doc_of_word[: len(doc_of_word) - n + 1] == doc_of_word[n - 1 :]
    return shingles[same_doc], doc_of_word[: len(doc_of_word) - n + 1][same_doc]


def permutations(config: MinHashDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(config.seed)
    a = rng.integers(1, 2**63, size=config.num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=config.num_perm, dtype=np.uint64)
    return a, b


def signatures(text: pa.Array | pa.ChunkedArray, config: MinHashDedupConfig) -> np.ndarray:
    """uint32 MinHash signatures, shape (documents, bands x rows). A document with fewer than ``ngram``
    words has no shingle; its signature is all 0xFFFFFFFF and it is never a near-duplicate candidate."""
    n_docs = len(text)
    sig = np.full((n_docs, config.num_perm), EMPTY, np.uint32)
    shingles, docs = shingle_hashes(text, config)
    a, b = permutations(config)
    for start in range(0, len(shingles), SHINGLE_BLOCK):
        block, owners = shingles[start : start + SHINGLE_BLOCK], docs[start : start + SHINGLE_BLOCK]
        # Permutation-major (num_perm, block) with in-place updates: three passes over a cache-sized array.
        with np.errstate(over="ignore"):
            values = np.multiply.outer(a, block)
            values += b[:, None]
            values >>= np.uint64(32)
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        minima = np.minimum.reduceat(values, starts, axis=1).T.astype(np.uint32)
        owner = owners[starts]
        sig[owner] = np.minimum(sig[owner], minima)  # owners within a block are distinct
    return sig


def band_keys(sig: np.ndarray, config: MinHashDedupConfig) -> np.ndarray:
    """uint64 key per (document, band); equal keys put two documents in the same LSH bucket."""
    rows = sig.reshape(len(sig), config.bands, config.rows).astype(np.uint64)
    key = np.zeros((len(sig), config.bands), np.uint64)
    with np.errstate(over="ignore"):
        for r in range(config.rows):
            key = _mix(key * np.uint64(0x9E3779B97F4A7C15) + rows[:, :, r])
    return key


def has_shingles(sig: np.ndarray) -> np.ndarray:
    return ~(sig == EMPTY).all(axis=1)


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of equal signature rows, row by row of two (n, num_perm) arrays."""
    return (a == b).mean(axis=-1)

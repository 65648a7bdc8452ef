"""Text normalisation for dedup keys, vectorised with Arrow compute and numpy (no per-document Python)."""

from __future__ import annotations

import string

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.stages import Normalization

#: Byte map turning ASCII punctuation and symbols into spaces. Safe on any UTF-8: bytes below 0x80 never
#: occur inside a multi-byte character.
ASCII_PUNCTUATION = np.arange(256, dtype=np.uint8)
ASCII_PUNCTUATION[np.frombuffer(string.punctuation.encode(), np.uint8)] = ord(" ")
UNICODE_PUNCTUATION = r"[\p{P}\p{S}]+"


def _map_bytes(text: pa.Array, table: np.ndarray) -> pa.Array:
    text = text.cast(pa.large_string())
    validity, offsets, data = text.buffers()
    if data is None:
        return text
    mapped = table[np.frombuffer(data, np.uint8)]
    return pa.Array.from_buffers(
        pa.large_string(), len(text), [validity, offsets, pa.py_buffer(mapped)], offset=text.offset
    )


def remove_punctuation(text: pa.Array) -> pa.Array:
    """Punctuation and symbols to spaces: a byte table for ASCII, a regex only for non-ASCII documents."""
    text = _map_bytes(text, ASCII_PUNCTUATION)
    wide = pc.invert(pc.string_is_ascii(text))
    if pc.any(wide).as_py():
        replaced = pc.replace_substring_regex(text.filter(wide), UNICODE_PUNCTUATION, " ")
        text = pc.replace_with_mask(text, wide, replaced)
    return text


def normalize(text: pa.Array | pa.ChunkedArray, config: Normalization) -> pa.Array:
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if config.nfkc:
        text = pc.utf8_normalize(text, "NFKC")
    if config.lowercase:
        text = pc.utf8_lower(text)
    if config.punctuation:
        text = remove_punctuation(text)
    if config.digits:
        text = pc.replace_substring_regex(text, r"\d", "0")
    if config.whitespace:
        text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))
    return text

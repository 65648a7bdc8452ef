"""Text normalisation for dedup keys, vectorised with Arrow compute (no per-document Python)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from schemas.stages import Normalization


def normalize(text: pa.Array | pa.ChunkedArray, config: Normalization) -> pa.Array | pa.ChunkedArray:
    if config.nfkc:
        text = pc.utf8_normalize(text, "NFKC")
    if config.lowercase:
        text = pc.utf8_lower(text)
    if config.punctuation:
        text = pc.replace_substring_regex(text, r"[\p{P}\p{S}]+", " ")
    if config.digits:
        text = pc.replace_substring_regex(text, r"\d", "0")
    if config.whitespace:
        text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))
    return text

"""Word splitting as spaCy's English tokenizer does it (datatrove's filters split words with it), on whole Arrow
arrays.

Text is split on whitespace with one Arrow kernel. A piece of letters and digits that is no special case and no
number with a unit ("the", "2024"; not "cannot", "10km") is a word as it is, which is most of them; only the
other pieces, each distinct one once, go through spaCy's own rules (``stages.spacy_words``), and their words
replace them with Arrow kernels again. A batch thus costs a few C++ passes plus one Python call per distinct
punctuated piece, not a spaCy ``Doc`` per document. ``tests/test_quality.py`` compares the words with spaCy's
on thousands of real lines of several kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.spacy_words import spacy_splitter


@dataclass(frozen=True)
class Words:
    """The words of every document of a batch: flat strings and, for each, the document it belongs to."""

    tokens: pa.Array
    doc: np.ndarray
    n_docs: int

    def per_doc(self, values: np.ndarray) -> np.ndarray:
        """Sum of a per-word value for each document."""
        return np.bincount(self.doc, weights=values, minlength=self.n_docs)

    def count(self) -> np.ndarray:
        return np.bincount(self.doc, minlength=self.n_docs)


def split_whitespace(text: pa.Array) -> pa.ListArray:
    """Arrow's ``utf8_split_whitespace`` on trimmed text. pyarrow 26's kernel misreads whitespace that ends the
    array's data: it can yield a stray non-empty token there whose content depends on memory past the buffer, so
    a document's words (and its MinHash signature) changed with the batch it was in. Trimming changes no word."""
    return pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text))


def split_words(text: pa.Array | pa.ChunkedArray) -> Words:
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    lists = split_whitespace(text)
    pieces = lists.flatten()
    owner = np.repeat(np.arange(len(text)), pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False))
    # A plain piece is a word unless it is a special case ("cannot") or a number with a unit ("10km", "2K").
    rest = pc.or_(pc.invert(pc.utf8_is_alnum(pieces)), pc.is_in(pieces, value_set=_special_words()))
    rest = pc.or_(rest, pc.match_substring_regex(pieces, r"[0-9]\pL"))
    if not pc.any(rest).as_py():
        return Words(pieces, owner, len(text))
    marked = pieces.filter(rest)
    distinct = pc.unique(marked)
    splitter = spacy_splitter()
    spaced = pa.array([" ".join(splitter.split(piece)) for piece in distinct.to_pylist()], pa.string())
    split = pc.take(spaced, pc.index_in(marked, value_set=distinct))
    tokens, owner = _resplit(pc.replace_with_mask(pieces, rest, split), owner)
    return Words(tokens, owner, len(text))


@cache
def _special_words() -> pa.Array:
    """The special cases made of letters and digits only ("cannot", "gonna"): plain-looking pieces spaCy splits."""
    return pa.array(sorted(k for k in spacy_splitter().specials if k.isalnum()), pa.string())


def _resplit(pieces: pa.Array, owner: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    lists = split_whitespace(pieces)
    tokens = lists.flatten()
    owner = np.repeat(owner, pc.list_value_length(lists).to_numpy(zero_copy_only=False))
    keep = pc.greater(pc.binary_length(tokens), 0)
    return tokens.filter(keep), owner[keep.to_numpy(zero_copy_only=False)]

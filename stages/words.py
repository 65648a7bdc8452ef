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
    alnum = pc.utf8_is_alnum(pieces)
    rest = pc.or_(pc.invert(alnum), pc.is_in(pieces, value_set=_special_words()))
    mixed = pc.and_(alnum, pc.invert(pc.utf8_is_alpha(pieces)))  # only these can hold a digit before a letter
    if pc.any(mixed).as_py():
        unit = np.zeros(len(pieces), bool)
        unit[np.flatnonzero(mixed.to_numpy(zero_copy_only=False))] = pc.match_substring_regex(
            pieces.filter(mixed), r"[0-9]\pL"
        ).to_numpy(zero_copy_only=False)
        rest = pc.or_(rest, pa.array(unit))
    if not pc.any(rest).as_py():
        return Words(pieces, owner, len(text))
    marked = pieces.filter(rest)
    distinct = pc.unique(marked)
    words = split_whitespace(_split_distinct(distinct))  # each distinct piece's words
    which = pc.index_in(marked, value_set=distinct).to_numpy(zero_copy_only=False)
    tokens, owner = _splice(pieces, np.flatnonzero(rest.to_numpy(zero_copy_only=False)), which, words, owner)
    return Words(tokens, owner, len(text))


def _splice(pieces: pa.Array, at: np.ndarray, which: np.ndarray, words: pa.ListArray, owner: np.ndarray
            ) -> tuple[pa.Array, np.ndarray]:  # fmt: skip
    """The pieces with the one at each place ``at`` replaced by the words of distinct piece ``which``: one gather
    over the pieces and the distinct pieces' words, instead of a second whitespace split of every piece."""
    offsets = words.offsets.to_numpy().astype(np.int64)
    starts = offsets[:-1] - offsets[0]
    n_words = pc.list_value_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
    per_piece = np.ones(len(pieces), np.int64)
    per_piece[at] = n_words[which]
    first = np.cumsum(per_piece) - per_piece  # each piece's first place in the output
    gather = np.empty(int(per_piece.sum()), np.int64)
    plain = np.ones(len(pieces), bool)
    plain[at] = False
    gather[first[plain]] = np.flatnonzero(plain)
    counts = n_words[which]
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    gather[np.repeat(first[at], counts) + within] = len(pieces) + np.repeat(starts[which], counts) + within
    flat = words.flatten()
    tokens = pa.concat_arrays([pieces, flat.cast(pieces.type)]).take(pa.array(gather))
    owner = np.repeat(owner, per_piece)
    keep = pc.greater(pc.binary_length(tokens), 0)  # an empty document is one empty piece, and no word
    if pc.all(keep).as_py():
        return tokens, owner
    return tokens.filter(keep), owner[keep.to_numpy(zero_copy_only=False)]


#: A number ("42", "-0.5", "2.5333642e+00") with at most one closing mark after it. spaCy keeps such a number whole
#: and splits the mark off; no special case but "8)" has this shape. Data-heavy text is full of distinct numbers
#: (55% of the distinct punctuated pieces of the prose benchmark), each a cache miss for the splitter, so they are
#: split here in one Arrow pass. One dot at most: a dotted quad is spaCy's URL rule's business.
NUMBER = r"^[-+]?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?[,;:)\]]?$"


def _split_distinct(distinct: pa.Array) -> pa.Array:
    """Each distinct piece's words joined by spaces: numbers by one Arrow pass, the rest by spaCy's rules."""
    number = pc.and_(pc.match_substring_regex(distinct, NUMBER), pc.invert(pc.is_in(distinct, _special_keys())))
    if not pc.any(number).as_py():
        return _split_by_rules(distinct)
    numbers = distinct.filter(number)
    marked = pc.match_substring_regex(numbers, r"[,;:)\]]$")
    head = pc.utf8_slice_codeunits(numbers, 0, -1)
    mark = pc.utf8_slice_codeunits(numbers, -1)
    spaced_numbers = pc.if_else(marked, pc.binary_join_element_wise(head, mark, " "), numbers)
    others = _split_by_rules(distinct.filter(pc.invert(number)))
    order = np.argsort(
        np.concatenate(
            [
                np.flatnonzero(number.to_numpy(zero_copy_only=False)),
                np.flatnonzero(~number.to_numpy(zero_copy_only=False)),
            ]
        ),
        kind="stable",
    )
    return pc.take(pa.concat_arrays([spaced_numbers, others]), pa.array(order))


def _split_by_rules(pieces: pa.Array) -> pa.Array:
    splitter = spacy_splitter()
    return pa.array([" ".join(splitter.split(piece)) for piece in pieces.to_pylist()], pa.string())


@cache
def _special_keys() -> pa.Array:
    return pa.array(sorted(spacy_splitter().specials), pa.string())


@cache
def _special_words() -> pa.Array:
    """The special cases made of letters and digits only ("cannot", "gonna"): plain-looking pieces spaCy splits."""
    return pa.array(sorted(k for k in spacy_splitter().specials if k.isalnum()), pa.string())

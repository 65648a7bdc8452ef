"""Word splitting close to spaCy's English tokenizer (which datatrove's filters use), on whole Arrow arrays.

spaCy splits on whitespace, then peels punctuation off both ends of each piece (one character at a time,
"..." as one), splits contractions ("do n't", "it 's") and hyphens between letters, and keeps URLs,
numbers such as "3.14" or "1,000" and abbreviations such as "U.S." whole. Here the same rules are a few RE2
passes over the flattened pieces of a batch, so a batch costs a handful of C++ kernels instead of a Python
call per document. ``tests/test_quality.py`` measures the agreement with spaCy and with datatrove's verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

URL = r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://|www\.)\S+$"
ABBREVIATION = r"^(?:\p{L}\.){2,}$|^(?:e\.g|i\.e|Mr|Mrs|Dr|vs)\.$"
PUNCT = r"""(?:\.\.\.|[(\[{)\]}"'`“”‘’«»$£€#¿¡*<>‹›…,.;:!?%])"""
PREFIX = rf"^({PUNCT}+)(\S)"
SUFFIX = rf"(\S)({PUNCT}+)$"
ALL_PUNCT = rf"^{PUNCT}+$"
SPLIT_PASSES = (
    (
        ("'", "’"),
        (
            (r"(?i)^(\p{L}+)(n['’]t)$", r"\1 \2"),  # don't -> do n't
            (r"(?i)^(\p{L}+)(['’](?:s|m|re|ve|ll|d))$", r"\1 \2"),  # it's -> it 's
        ),
    ),
    (
        ("-", "/"),
        (
            (r"(\p{L})(-{1,2}|/)(\p{L})", r"\1 \2 \3"),  # well-known -> well - known
            (r"(\p{L})(-{1,2}|/)(\p{L})", r"\1 \2 \3"),  # second pass for a-b-c
        ),
    ),
    (("...", "…"), ((r"(\p{L})(\.\.\.|…)(\p{L})", r"\1 \2 \3"),)),  # world...It -> world ... It
)


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
    # Plain words (letters and digits only) need no rule: the regex passes see the rest only.
    rest = pc.invert(pc.utf8_is_alnum(pieces))
    split = _split_marked(pieces.filter(rest))
    tokens, owner = _split_runs(*_resplit(pc.replace_with_mask(pieces, rest, split), owner))
    return Words(tokens, owner, len(text))


def _split_marked(pieces: pa.Array) -> pa.Array:
    whole = pc.or_(pc.match_substring_regex(pieces, URL), pc.match_substring_regex(pieces, ABBREVIATION))
    split = pc.replace_substring_regex(pieces, PREFIX, r"\1 \2")
    split = pc.replace_substring_regex(split, SUFFIX, r"\1 \2")
    for marks, passes in SPLIT_PASSES:
        # A literal search first: each pass's regex runs only on the pieces that hold its marks.
        hit = (
            pc.or_(*(pc.match_substring(split, m) for m in marks))
            if len(marks) > 1
            else pc.match_substring(split, marks[0])
        )
        if not pc.any(hit).as_py():
            continue
        subset = split.filter(hit)
        for pattern, replacement in passes:
            subset = pc.replace_substring_regex(subset, pattern, replacement)
        split = pc.replace_with_mask(split, hit, subset)
    return pc.if_else(whole, pieces, split)


def _split_runs(tokens: pa.Array, owner: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """A run of punctuation becomes one token per mark ("!!!" -> "! ! !"), except "..." and "--"."""
    runs = pc.and_(pc.greater(pc.binary_length(tokens), 1), pc.invert(pc.utf8_is_alnum(tokens)))
    candidates = tokens.filter(runs)
    is_run = pc.match_substring_regex(candidates, ALL_PUNCT)
    runs = pc.replace_with_mask(runs, runs, is_run)
    spaced = pc.replace_substring_regex(candidates.filter(is_run), r"(\.\.\.|--|.)", r"\1 ")
    return _resplit(pc.replace_with_mask(tokens, runs, spaced), owner)


def _resplit(pieces: pa.Array, owner: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    lists = split_whitespace(pieces)
    tokens = lists.flatten()
    owner = np.repeat(owner, pc.list_value_length(lists).to_numpy(zero_copy_only=False))
    keep = pc.greater(pc.binary_length(tokens), 0)
    return tokens.filter(keep), owner[keep.to_numpy(zero_copy_only=False)]

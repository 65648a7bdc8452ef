"""The tags stage: sizes, token count, domain heuristics, PII counts and redaction, benchmark contamination.

Every tag is a column of ``OUT/docs/``, measured with Arrow kernels over the whole batch. Benchmark files are a
resource loaded once per worker (as the tokenizer is), turned into a sorted array of word n-gram hashes; the
check is then one ``np.isin`` over the batch's n-grams.
"""

from __future__ import annotations

import functools

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas.document import DROP_REASON
from schemas.stages import TagsConfig
from stages.minhash import word_hashes
from stages.text_stats import NGrams
from stages.tokenize import load_encoder
from stages.words import split_whitespace
from storage.fs import read_bytes

EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
PHONE = r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}"
IPV4 = r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"
PII = (("email", EMAIL, "<EMAIL>"), ("phone", PHONE, "<PHONE>"), ("ip", IPV4, "<IP_ADDRESS>"))

#: Domain cues: each counts regex matches per line; the domain with the highest share of lines wins. Line
#: starts are "after a line break" in "\n" + text (Arrow's count re-anchors ^ at every match).
CODE_WORDS = r"def |class |import |from \S+ import|#include|public |private |function |return |var |let |const "
CODE = rf"\n[ \t]*(?:{CODE_WORDS})|[;{{}}][ \t]*(?:\n|$)"
MATH = r"\\(?:frac|sum|int|sqrt|alpha|beta|theta|cdot|leq|geq|begin\{equation)|\$[^$\n]+\$|\d\s*[+\-*/×÷^]\s*\d+\s*="
CHAT = r"\n[ \t]*(?:User|Assistant|Human|AI|Bot|Q|A|Question|Answer|<\|?(?:user|assistant)\|?>)[ \t]*[:：>]"


def _np(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)


def domain_scores(text: pa.Array) -> dict[str, np.ndarray]:
    lines = _np(pc.count_substring(text, "\n")) + 1
    framed = pc.binary_join_element_wise("\n", text, "")
    return {
        "code": np.minimum(_np(pc.count_substring_regex(framed, CODE)) / lines, 1.0),
        "math": np.minimum(_np(pc.count_substring_regex(text, MATH)) / lines, 1.0),
        "chat": np.minimum(_np(pc.count_substring_regex(framed, CHAT)) / lines, 1.0),
    }


#: Share of lines with a domain's cues from which a document belongs to it (measured on the bundled sample:
#: standard-library source files score 0.06–0.15 for code, the reference manual's prose 0.00–0.02).
DOMAIN_THRESHOLDS = {"code": 0.05, "math": 0.1, "chat": 0.2}


def domains(scores: dict[str, np.ndarray]) -> list[str]:
    """The domain whose score most exceeds its threshold; prose when none reaches it."""
    names = list(scores)
    relative = np.stack([scores[n] / DOMAIN_THRESHOLDS[n] for n in names], axis=1)
    best = relative.argmax(axis=1)
    return [names[b] if relative[i, b] >= 1 else "prose" for i, b in enumerate(best)]


def _ngram_hashes(text: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the lower-cased word n-grams of every text (punctuation dropped), with their owner."""
    cleaned = pc.replace_substring_regex(pc.utf8_lower(text), r"[^\p{L}\p{N}\s]+", " ")
    lists = split_whitespace(cleaned)
    tokens = lists.flatten()
    owner = np.repeat(np.arange(len(text)), pc.list_value_length(lists).to_numpy(zero_copy_only=False))
    keep = pc.greater(pc.binary_length(tokens), 0)
    tokens, owner = tokens.filter(keep), owner[keep.to_numpy(zero_copy_only=False)]
    grams = NGrams(word_hashes(tokens), np.zeros(len(owner), np.int64), owner)
    gram, gowner, _ = grams.grow_to(n)
    return gram, gowner


@functools.lru_cache(maxsize=4)
def benchmark_ngrams(paths: tuple[str, ...], field: str, n: int) -> np.ndarray:
    """Sorted unique n-gram hashes of benchmark files: JSONL (``field`` of each record) or plain text lines."""
    texts: list[str] = []
    for path in paths:
        data = read_bytes(path).decode("utf-8", errors="replace")
        for line in data.splitlines():
            if path.endswith((".jsonl", ".json")) and line.strip():
                value = orjson.loads(line).get(field)
                if isinstance(value, str):
                    texts.append(value)
            elif line.strip():
                texts.append(line)
    gram, _ = _ngram_hashes(pa.array(texts, pa.string()), n)
    return np.unique(gram)


def tags(table: pa.Table, config: TagsConfig) -> pa.Table:
    text = table.column("text").combine_chunks()
    n = len(text)
    columns: dict[str, pa.Array] = {
        "n_words": pa.array(_np(pc.list_value_length(split_whitespace(text))).astype(np.int64)),
        "n_lines": pa.array((_np(pc.count_substring(text, "\n")) + 1).astype(np.int64)),
    }
    if config.tokenizer:
        _, offsets = load_encoder(config.tokenizer, "fastokens", False)(text.to_pylist())
        columns["token_count"] = pa.array(np.diff(offsets))
    scores = domain_scores(text)
    columns["domain"] = pa.array(domains(scores), pa.string())
    for name, values in scores.items():
        columns[f"domain_{name}_score"] = pa.array(values)
    for name, pattern, placeholder in PII:
        columns[f"pii_{name}"] = pc.count_substring_regex(text, pattern).cast(pa.int64())
        if config.redact_pii:
            text = pc.replace_substring_regex(text, pattern, placeholder)
    reason = np.full(n, None, dtype=object)
    if config.benchmarks:
        known = benchmark_ngrams(tuple(config.benchmarks), config.benchmark_field, config.ngram)
        gram, owner = _ngram_hashes(text, config.ngram)
        hits = np.bincount(owner[np.isin(gram, known)], minlength=n)
        columns["contamination_ngrams"] = pa.array(hits.astype(np.int64))
        columns["contaminated"] = pa.array(hits > 0)
        if config.drop_contaminated:
            reason[hits > 0] = "tags:contaminated"
    table = table.set_column(table.column_names.index("text"), "text", text)
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table.append_column(DROP_REASON, pa.array(reason.tolist(), pa.string()))

"""The quality stage: Gopher repetition, Gopher quality, C4 and FineWeb rules on whole Arrow batches.

Signals (``q_*`` columns) are measured for every document, then each rule set decides in datatrove's order and
the first rule that fires names the drop (``gopher_quality:min_doc_words``) with its value (``q_value``).
Words come from :mod:`stages.words` (spaCy-like), lines and paragraphs from Arrow splits, duplicates and n-grams
from :mod:`stages.text_stats`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION

from schemas.document import DROP_REASON
from schemas.stages import C4Rules, FineWebRules, GopherQualityRules, GopherRepetitionRules, QualityConfig
from stages.text_stats import (
    NGrams,
    duplicates,
    first_occurrences,
    repeated_ngram_chars_bound,
    repeated_ngram_chars_exact,
    split_flat,
    split_runs,
    string_ids,
    top_ngram_chars,
)
from stages.words import Words, split_words

NOT_SYMBOL = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in sorted(PUNCTUATION_SET)) + "]"
TERMINAL = "(?:" + "|".join(f"\\x{{{ord(c):x}}}" for c in sorted(TERMINAL_PUNCTUATION)) + ")$"
SPLITLINES = r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x{85}\x{2028}\x{2029}]"
#: The characters that end a line (``SPLITLINES``; "\r\n" ends with one).
LINE_BREAKS = pa.array(["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
INDENT = r"[^\S\n\r\x0b\x0c\x1c\x1d\x1e\x{85}\x{2028}\x{2029}]"  # whitespace that does not end a line
CITATION = r"\[\d*]|\[edit]|\[citation needed]"
POLICY = r"terms of use|privacy policy|cookie policy|uses cookies|use of cookies|use cookies"
#: A sentence ends at its punctuation (and closing quotes or brackets) before white space, as Python sees it
#: (RE2's \s alone is ASCII: sentences joined by a no-break or an ideographic space were one), or the line's end.
SENTENCE_END = r"[.!?…։؟۔।॥。！？]+[\"'”’)\]]*(?:[\s\p{Z}\x{1c}-\x{1f}\x{85}]|$)"
#: The characters ``str.strip()`` removes (``str.isspace``; U+3000 is the last of them), for Arrow's trims.
PY_SPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
#: What a line must end with to stay in C4 (``[.?!"']$``).
TERMINAL_CHARS = pa.array([".", "?", "!", '"', "'"])


class Verdicts:
    """First failing rule per document, in the order the rules are applied."""

    def __init__(self, n: int) -> None:
        self.reason = np.full(n, None, dtype=object)
        self.value = np.full(n, np.nan)

    def check(self, name: str, failed: np.ndarray, value: np.ndarray) -> None:
        new = failed & (self.reason == None)  # noqa: E711 - elementwise on an object array
        self.reason[new] = name
        self.value[new] = np.asarray(value, dtype=np.float64)[new] if np.ndim(value) else value

    def check_subset(self, rows: np.ndarray, other: Verdicts) -> None:
        """Merge the verdicts of a rule set that ran on ``rows`` only."""
        fired = other.reason != None  # noqa: E711
        self.reason[rows[fired]] = other.reason[fired]
        self.value[rows[fired]] = other.value[fired]

    @property
    def open(self) -> np.ndarray:
        return self.reason == None  # noqa: E711


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.maximum(b, 1), 0.0)


def _np(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)


def _word_stats(words: Words) -> dict[str, np.ndarray]:
    tokens = words.tokens
    hashes = string_ids(tokens)
    length = pc.utf8_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
    # Letters-and-digits tokens (most of them) are settled without a regex: they hold a non-symbol
    # character, and a letter unless they are all digits.
    plain = pc.utf8_is_alnum(tokens).to_numpy(zero_copy_only=False)
    non_symbol = plain.copy()
    alpha = plain & ~pc.utf8_is_digit(tokens).to_numpy(zero_copy_only=False)
    rest = pa.array(~plain)
    others = tokens.filter(rest)
    non_symbol[~plain] = pc.match_substring_regex(others, NOT_SYMBOL).to_numpy(zero_copy_only=False)
    alpha[~plain] = pc.match_substring_regex(others, r"\p{L}").to_numpy(zero_copy_only=False)
    return {"hash": hashes, "len": length, "non_symbol": non_symbol, "alpha": alpha}


def gopher_repetition(text: pa.Array, words: Words, stats: dict, rules: GopherRepetitionRules, v: Verdicts,
                      signals: dict) -> None:  # fmt: skip
    n = len(text)
    chars = _np(pc.utf8_length(text))
    paras, powner, pcount = split_flat(pc.utf8_trim_whitespace(text), r"\n{2,}")
    dup_paras, dup_para_chars = duplicates(paras, powner, n)
    lines, lowner, lcount = split_runs(text, "\n")
    dup_lines, dup_line_chars = duplicates(lines, lowner, n)
    signals["q_dup_para_frac"] = _ratio(dup_paras, pcount)
    signals["q_dup_para_char_frac"] = _ratio(dup_para_chars, chars)
    signals["q_dup_line_frac"] = _ratio(dup_lines, lcount)
    signals["q_dup_line_char_frac"] = _ratio(dup_line_chars, chars)
    for key in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"):
        limit = getattr(rules, key)
        if limit:
            v.check(f"gopher_repetition:{key}", signals[f"q_{key}"] > limit, signals[f"q_{key}"])
    # n-gram statistics only for the words of documents no rule has dropped yet.
    mine = v.open[words.doc]
    grams = NGrams(stats["hash"][mine], stats["len"][mine], words.doc[mine])
    # n-gram signals are measured only for documents no earlier rule dropped (NaN for the others).
    for size, limit in sorted(rules.top_n_grams):
        measured = v.open.copy()
        top, has = top_ngram_chars(grams, size, n, measured)
        signals[f"q_top_{size}_gram_frac"] = np.where(measured, _ratio(top, chars), np.nan)
        v.check(f"gopher_repetition:top_{size}_gram", has & (signals[f"q_top_{size}_gram_frac"] > limit),
                signals[f"q_top_{size}_gram_frac"])  # fmt: skip
    starts = np.searchsorted(grams.owner, np.arange(n + 1))
    for size, limit in sorted(rules.dup_n_grams):
        measured = v.open.copy()
        frac = np.where(measured, _ratio(repeated_ngram_chars_bound(grams, size, n, measured), chars), np.nan)
        need = measured & (frac > limit)
        first_occurrences(grams, size, need)
        for doc in np.flatnonzero(need):
            a, b = starts[doc], starts[doc + 1]
            frac[doc] = repeated_ngram_chars_exact(grams, size, a, b - a) / chars[doc]
        signals[f"q_dup_{size}_gram_frac"] = frac
        v.check(f"gopher_repetition:duplicated_{size}_n_grams", frac > limit, frac)


def gopher_quality(text: pa.Array, lines: Lines, words: Words, stats: dict, rules: GopherQualityRules,
                   v: Verdicts, signals: dict) -> None:  # fmt: skip
    n_words = words.count().astype(np.float64)
    non_symbol = words.per_doc(stats["non_symbol"].astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        avg_len = words.per_doc(stats["len"] * stats["non_symbol"]) / non_symbol
    hashes = _np(pc.count_substring(text, "#"))
    ellipsis = _np(pc.count_substring(text, "...")) + _np(pc.count_substring(text, "…"))
    n_lines = lines.count.astype(np.float64)
    # datatrove: s.lstrip().startswith(("•", "-")) and s.rstrip().endswith(("...", "…")) over splitlines()
    head, tail = pc.utf8_ltrim(lines.parts, PY_SPACE), pc.utf8_rtrim(lines.parts, PY_SPACE)
    bullets = lines.per_doc(pc.or_(pc.starts_with(head, "•"), pc.starts_with(head, "-")))
    end_ellipsis = lines.per_doc(pc.or_(pc.ends_with(tail, "..."), pc.ends_with(tail, "…")))
    signals.update(q_stop_words=_stop_words(words, rules.stop_words))
    signals.update(
        q_words=n_words, q_non_symbol_words=non_symbol, q_avg_word_length=avg_len,
        q_hash_ratio=_ratio(hashes, n_words), q_ellipsis_ratio=_ratio(ellipsis, n_words),
        q_bullet_lines_ratio=_ratio(bullets, n_lines), q_ellipsis_lines_ratio=_ratio(end_ellipsis, n_lines),
        q_alpha_words_ratio=_ratio(words.per_doc(stats["alpha"].astype(np.float64)), n_words),
    )  # fmt: skip
    s = signals
    stop_words = s["q_stop_words"]
    checks = [
        ("min_doc_words", rules.min_doc_words, non_symbol < (rules.min_doc_words or 0), non_symbol),
        ("max_doc_words", rules.max_doc_words, non_symbol > (rules.max_doc_words or np.inf), non_symbol),
        ("min_avg_word_length", rules.min_avg_word_length, avg_len < (rules.min_avg_word_length or 0), avg_len),
        ("max_avg_word_length", rules.max_avg_word_length, avg_len > (rules.max_avg_word_length or np.inf), avg_len),
        ("max_hash_ratio", rules.max_symbol_word_ratio, s["q_hash_ratio"] > (rules.max_symbol_word_ratio or np.inf),
         s["q_hash_ratio"]),
        ("max_ellipsis_ratio", rules.max_symbol_word_ratio,
         s["q_ellipsis_ratio"] > (rules.max_symbol_word_ratio or np.inf), s["q_ellipsis_ratio"]),
        ("max_bullet_lines_ratio", rules.max_bullet_lines_ratio,
         s["q_bullet_lines_ratio"] > (rules.max_bullet_lines_ratio or np.inf), s["q_bullet_lines_ratio"]),
        ("max_ellipsis_lines_ratio", rules.max_ellipsis_lines_ratio,
         s["q_ellipsis_lines_ratio"] > (rules.max_ellipsis_lines_ratio or np.inf), s["q_ellipsis_lines_ratio"]),
        ("min_alpha_words_ratio", rules.max_non_alpha_words_ratio,
         s["q_alpha_words_ratio"] < (rules.max_non_alpha_words_ratio or 0), s["q_alpha_words_ratio"]),
        ("min_stop_words", rules.min_stop_words, stop_words < (rules.min_stop_words or 0), stop_words),
    ]  # fmt: skip
    for name, limit, failed, value in checks:
        if limit:
            v.check(f"gopher_quality:{name}", failed, value)


def _stop_words(words: Words, stop_words: list[str]) -> np.ndarray:
    """How many of the distinct stop words each document holds, as datatrove counts them
    (``stop_words.intersection(set(words))``: case matters, "The" is not "the"): one lookup of every word in the
    set, then the distinct (document, stop word) pairs among the hits."""
    wanted = pa.array(sorted(set(stop_words)), pa.string())
    index = pc.index_in(words.tokens, value_set=wanted)
    hits = pc.is_valid(index)
    which = index.filter(hits).to_numpy(zero_copy_only=False).astype(np.int64)
    pairs = np.unique(words.doc[hits.to_numpy(zero_copy_only=False)].astype(np.int64) * (len(wanted) + 1) + which)
    return np.bincount(pairs // (len(wanted) + 1), minlength=words.n_docs).astype(np.float64)


#: The line breaks of ``str.splitlines`` other than "\n": rare in real text, so a batch without them is split on
#: "\n" by a plain search, eight times faster than the regex.
RARE_LINE_BREAKS = r"[\r\x0b\x0c\x1c\x1d\x1e\x{85}\x{2028}\x{2029}]"


def split_lines(text: pa.Array) -> pa.ListArray:
    """Each document's lines as ``str.split`` on ``str.splitlines``' breaks (an empty last line after a final
    break included)."""
    if pc.any(pc.match_substring_regex(text, RARE_LINE_BREAKS)).as_py():
        return pc.split_pattern_regex(text, SPLITLINES)
    return pc.split_pattern(text, "\n")


@dataclass(frozen=True)
class Lines:
    """Each document's lines as ``str.splitlines`` gives them, split once for C4 and Gopher's line rules (each
    used to scan the whole text with a regex of its own)."""

    #: The parts between line breaks, untrimmed; a document that ends with a break has an empty last part.
    parts: pa.Array
    owner: np.ndarray
    #: Parts that are lines (all but that empty last part).
    real: np.ndarray
    #: Lines per document.
    count: np.ndarray

    @classmethod
    def of(cls, text: pa.Array) -> Lines:
        lists = split_lines(text)
        counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        # splitlines() has no empty last element after a final line break
        trailing = pc.is_in(pc.utf8_slice_codeunits(text, -1), LINE_BREAKS).to_numpy(zero_copy_only=False)
        real = np.ones(int(counts.sum()), bool)
        real[(np.cumsum(counts) - 1)[trailing & (counts > 0)]] = False
        return cls(lists.flatten(), np.repeat(np.arange(len(text)), counts), real, counts - trailing)

    def per_doc(self, flags: pa.Array) -> np.ndarray:
        """How many lines of each document have ``flags`` set."""
        hits = flags.to_numpy(zero_copy_only=False) & self.real
        return np.bincount(self.owner[hits], minlength=len(self.count)).astype(np.float64)


def c4(text: pa.Array, split: Lines, rules: C4Rules, signals: dict) -> pa.Array:
    """C4's line filters; returns the text of the kept lines (the rewrite datatrove applies). The document
    verdicts are left in ``signals`` for :func:`c4_verdicts`, which applies them at C4's place in the order.

    The checks run in datatrove's order, each on the lines every earlier check kept (``at``: their places among
    all lines): on prose most lines fail the terminal-punctuation check, so the word split, the lower-casing, the
    substring searches and the sentence count see a sixth of the text."""
    n = len(text)
    at = np.flatnonzero(split.real)
    raw = pc.utf8_trim_whitespace(split.parts).take(pa.array(at))  # before citations go: words are counted here

    def narrow(keep: np.ndarray) -> None:
        nonlocal at, raw, lines
        at, raw, lines = at[keep], raw.filter(pa.array(keep)), lines.filter(pa.array(keep))

    lines = raw
    if rules.max_word_length != -1:  # only a line longer than the limit can hold a longer word
        long = np.flatnonzero(pc.greater(pc.binary_length(raw), rules.max_word_length).to_numpy(zero_copy_only=False))
        if len(long):
            keep = np.ones(len(at), bool)
            keep[long] = _longest_word(raw.take(pa.array(long))) <= rules.max_word_length
            narrow(keep)
    if rules.remove_citations:  # the regex only on lines with a bracket
        bracket = pc.match_substring(lines, "[")
        if pc.any(bracket).as_py():
            lines = pc.replace_with_mask(
                lines, bracket, pc.replace_substring_regex(lines.filter(bracket), CITATION, "")
            )
    if rules.filter_no_terminal_punct:
        # the last character, looked up: a "$"-anchored regex scans every line from its start
        ends = pc.is_in(pc.utf8_slice_codeunits(lines, -1), TERMINAL_CHARS)
        narrow(pc.and_not(ends, pc.ends_with(lines, "...")).to_numpy(zero_copy_only=False))
    narrow(pc.greater_equal(pc.list_value_length(pc.utf8_split_whitespace(raw)), rules.min_words_per_line)
           .to_numpy(zero_copy_only=False))  # fmt: skip
    lowered = pc.utf8_lower(lines)
    flags = []
    if rules.filter_lorem_ipsum:
        lorem = pc.match_substring(lowered, "lorem ipsum").to_numpy(zero_copy_only=False)
        flags.append(("c4:lorem_ipsum", at[lorem]))
    else:
        lorem = np.zeros(len(at), bool)
    if rules.filter_javascript:
        keep = ~pc.match_substring(lowered, "javascript").to_numpy(zero_copy_only=False)
        lowered, lorem = lowered.filter(pa.array(keep)), lorem[keep]
        narrow(keep)
    if rules.filter_curly_bracket:
        curly = pc.match_substring(lines, "{").to_numpy(zero_copy_only=False) & ~lorem
        flags.append(("c4:curly_bracket", at[curly]))
    if rules.filter_policy:
        narrow(~pc.match_substring_regex(lowered, POLICY).to_numpy(zero_copy_only=False))
    # The document is dropped at the first line (in order) that is lorem ipsum or has a curly bracket.
    never = np.iinfo(np.int64).max
    first = np.full(n, never)
    firsts = {}
    for name, flagged in flags:
        where = np.full(n, never)
        np.minimum.at(where, split.owner[flagged], flagged)
        firsts[name] = where
        first = np.minimum(first, where)
    for name, where in firsts.items():
        signals[f"_{name}"] = (where == first) & (where < never)
    owner = split.owner[at]
    sentences = np.maximum(_np(pc.count_substring_regex(lines, SENTENCE_END)), 1)
    signals["q_c4_sentences"] = np.bincount(owner, weights=sentences, minlength=n)
    kept_counts = np.bincount(owner, minlength=n)
    signals["q_c4_kept_lines"] = kept_counts.astype(np.float64)
    if not rules.rewrite_text:
        return text
    offsets = pa.array(np.r_[0, np.cumsum(kept_counts)].astype(np.int32))
    return pc.utf8_trim_whitespace(pc.binary_join(pa.ListArray.from_arrays(offsets, lines), "\n"))


def _longest_word(lines: pa.Array) -> np.ndarray:
    """The length (characters) of each line's longest whitespace-separated word, 0 for a line without one."""
    words = pc.utf8_split_whitespace(lines)
    counts = pc.list_value_length(words).to_numpy(zero_copy_only=False)
    lengths = pc.utf8_length(words.flatten()).to_numpy(zero_copy_only=False).astype(np.int64)
    longest = np.zeros(len(lines), np.int64)
    has = counts > 0
    if has.any():
        starts = (np.cumsum(counts) - counts)[has]
        longest[has] = np.maximum.reduceat(lengths, starts)
    return longest


def c4_verdicts(rules: C4Rules, v: Verdicts, signals: dict) -> None:
    for name in ("c4:lorem_ipsum", "c4:curly_bracket"):
        if f"_{name}" in signals:
            v.check(name, signals[f"_{name}"], 1.0)
    if rules.min_num_sentences != -1:
        sentences = signals["q_c4_sentences"]
        v.check("c4:too_few_sentences", sentences < rules.min_num_sentences, sentences)


def fineweb(text: pa.Array, rules: FineWebRules, v: Verdicts, signals: dict) -> None:
    n = len(text)
    lines, owner, _ = split_flat(text, "\n", literal=True)
    nonempty = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0)
    lines, owner = lines.filter(nonempty), owner[nonempty.to_numpy(zero_copy_only=False)]
    n_lines = np.bincount(owner, minlength=n).astype(np.float64)
    v.check("fineweb:empty", n_lines == 0, 0.0)
    ends = pc.match_substring_regex(lines, TERMINAL).to_numpy(zero_copy_only=False).astype(np.float64)
    punct = _ratio(np.bincount(owner, weights=ends, minlength=n), n_lines)
    short = _np(pc.less_equal(pc.utf8_length(lines), rules.short_line_length))
    short_ratio = _ratio(np.bincount(owner, weights=short, minlength=n), n_lines)
    _, dup_chars = duplicates(lines, owner, n)
    char_dup = _ratio(dup_chars, _np(pc.utf8_length(text)) - _np(pc.count_substring(text, "\n")))
    words = split_words(text).count().astype(np.float64)
    list_ratio = _ratio(_np(pc.count_substring(text, "\n")), words)
    signals.update(q_line_punct_ratio=punct, q_short_line_ratio=short_ratio, q_char_dup_ratio=char_dup,
                   q_list_ratio=list_ratio)  # fmt: skip
    zero_ok = rules.line_punct_exclude_zero & (punct == 0)
    v.check("fineweb:line_punct_ratio", (punct < rules.line_punct_thr) & ~zero_ok, punct)
    v.check("fineweb:short_line_ratio", short_ratio > rules.short_line_thr, short_ratio)
    v.check("fineweb:char_dup_ratio", char_dup > rules.char_duplicates_ratio, char_dup)
    v.check("fineweb:list_ratio", list_ratio > rules.new_line_ratio, list_ratio)


def quality(table: pa.Table, config: QualityConfig) -> pa.Table:
    """Add the ``q_*`` signals, ``q_reason``/``q_value``, and (with ``drop``) set ``drop_reason``."""
    text = table.column("text").combine_chunks()
    n = len(text)
    verdicts = Verdicts(n)
    signals: dict[str, np.ndarray] = {}
    words: Words | None = None
    stats: dict = {}
    rewritten = text
    lines = Lines.of(text) if config.c4.enabled or config.gopher_quality.enabled else None
    if config.c4.enabled:  # C4 rewrites the text FineWeb reads, whatever the order of the verdicts
        rewritten = c4(text, lines, config.c4, signals)
    for rule_set in config.order:
        rules = getattr(config, rule_set)
        if not rules.enabled:
            continue
        if rule_set in ("gopher_quality", "gopher_repetition") and words is None:
            words = split_words(text)
            stats = _word_stats(words)
        if rule_set == "gopher_quality":
            gopher_quality(text, lines, words, stats, rules, verdicts, signals)
        elif rule_set == "gopher_repetition":
            gopher_repetition(text, words, stats, rules, verdicts, signals)
        elif rule_set == "c4":
            c4_verdicts(config.c4, verdicts, signals)
        else:
            _fineweb_on_open(rewritten, rules, verdicts, signals)
    for name, values in signals.items():
        if not name.startswith("_"):
            table = table.append_column(name, pa.array(np.asarray(values, np.float64)))
    table = table.append_column("q_reason", pa.array(verdicts.reason.tolist(), pa.string()))
    table = table.append_column("q_value", pa.array(verdicts.value))
    if config.drop:
        table = table.append_column(DROP_REASON, pa.array(verdicts.reason.tolist(), pa.string()))
    if config.drop and config.c4.enabled and config.c4.rewrite_text:  # tag-only runs leave the text as it was
        # Only the kept documents get C4's lines; a dropped one keeps the text it was dropped for (its length in
        # docs/, its text in dropped/), as datatrove's C4 filter rewrites a document only when it passes.
        kept = pa.array(verdicts.reason == None)  # noqa: E711 - elementwise on an object array
        table = table.set_column(table.column_names.index("text"), "text", pc.if_else(kept, rewritten, text))
    return table


def _fineweb_on_open(text: pa.Array, rules: FineWebRules, verdicts: Verdicts, signals: dict) -> None:
    """FineWeb's rules on the documents still undecided (they re-split words, so the others are skipped)."""
    n = len(text)
    survivors = np.flatnonzero(verdicts.open)
    sub = Verdicts(len(survivors))
    sub_signals: dict[str, np.ndarray] = {}
    fineweb(text.take(pa.array(survivors)), rules, sub, sub_signals)
    verdicts.check_subset(survivors, sub)
    for name, values in sub_signals.items():
        full = np.full(n, np.nan)
        full[survivors] = values
        signals[name] = full


def thresholds(config: QualityConfig) -> dict[str, list[tuple[str, float]]]:
    """Each ``q_*`` signal's limits as the rules above apply them: ``(rule name, limit)``, for drawing a rule's
    cut on its signal's histogram. Rules switched off (a null limit, a disabled rule set) are left out."""
    out: dict[str, list[tuple[str, float]]] = {}

    def add(signal: str, rule: str, limit: float | None) -> None:
        if limit is not None and limit is not False:
            out.setdefault(signal, []).append((rule, float(limit)))

    rep, gq, c4_rules, fw = config.gopher_repetition, config.gopher_quality, config.c4, config.fineweb
    if rep.enabled:
        for key in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"):
            add(f"q_{key}", f"gopher_repetition:{key}", getattr(rep, key) or None)
        for size, limit in rep.top_n_grams:
            add(f"q_top_{size}_gram_frac", f"gopher_repetition:top_{size}_gram", limit)
        for size, limit in rep.dup_n_grams:
            add(f"q_dup_{size}_gram_frac", f"gopher_repetition:duplicated_{size}_n_grams", limit)
    if gq.enabled:
        for signal, rule, limit in [
            ("q_non_symbol_words", "min_doc_words", gq.min_doc_words),
            ("q_non_symbol_words", "max_doc_words", gq.max_doc_words),
            ("q_avg_word_length", "min_avg_word_length", gq.min_avg_word_length),
            ("q_avg_word_length", "max_avg_word_length", gq.max_avg_word_length),
            ("q_hash_ratio", "max_hash_ratio", gq.max_symbol_word_ratio),
            ("q_ellipsis_ratio", "max_ellipsis_ratio", gq.max_symbol_word_ratio),
            ("q_bullet_lines_ratio", "max_bullet_lines_ratio", gq.max_bullet_lines_ratio),
            ("q_ellipsis_lines_ratio", "max_ellipsis_lines_ratio", gq.max_ellipsis_lines_ratio),
            ("q_alpha_words_ratio", "min_alpha_words_ratio", gq.max_non_alpha_words_ratio),
            ("q_stop_words", "min_stop_words", gq.min_stop_words),
        ]:
            add(signal, f"gopher_quality:{rule}", limit or None)
    if c4_rules.enabled and c4_rules.min_num_sentences != -1:
        add("q_c4_sentences", "c4:too_few_sentences", c4_rules.min_num_sentences)
    if fw.enabled:
        add("q_line_punct_ratio", "fineweb:line_punct_ratio", fw.line_punct_thr)
        add("q_short_line_ratio", "fineweb:short_line_ratio", fw.short_line_thr)
        add("q_char_dup_ratio", "fineweb:char_dup_ratio", fw.char_duplicates_ratio)
        add("q_list_ratio", "fineweb:list_ratio", fw.new_line_ratio)
    return out

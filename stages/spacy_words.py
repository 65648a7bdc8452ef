"""spaCy's English tokenizer, the word splitter datatrove's filters use, applied to one whitespace-free piece.

The rules are spaCy's own (prefix, suffix and infix regexes, the URL pattern and its 1,300 special cases such as
"can't" → "ca n't", "e.g." or "):"), exported from the pinned spaCy into ``stages/data/spacy_en_tokenizer.json``
by ``tests/spacy_rules.py``. The algorithm follows spaCy's ``Tokenizer``: peel prefixes and suffixes until a
special case or nothing is left, split the rest at infixes, then merge token runs that spell a special case
(spaCy's special-case matcher). datatrove then strips each token and drops empty ones; so does :func:`split`.

Real text repeats its pieces ("end.", "(see", "):"), so each distinct piece is split once per process and cached;
plain words (letters and digits, no special case) never get here (``stages.words``).
"""

from __future__ import annotations

import json
import re
import re._constants as re_constants  # the parser behind ``re`` (public as sre_parse until 3.11)
import re._parser as re_parser
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources

#: Pieces kept in a worker's cache at most; past it the cache starts over (a bound, not a tuning knob).
MAX_CACHED = 1 << 20
#: Longer pieces (no whitespace: base64, minified code, a run of brackets) are one word. spaCy peels affixes one at
#: a time, each a copy of the rest, so a piece of n brackets costs n^2: 40,000 "(" took 1 s, a 1 MB one would hold
#: a worker for minutes. Real words are far shorter; this is the one place the words may differ from spaCy's.
MAX_PIECE = 4096
#: Characters of a piece's end the suffix rule can see: its longest bounded suffix (5) and look-behind (2).
SUFFIX_TAIL = 7


class SpacySplitter:
    def __init__(self, rules: dict, specials: bool = True) -> None:
        def compiled(name: str, guard: bool = False) -> re.Pattern[str]:
            pattern, flags = rules[name]["pattern"], rules[name]["flags"]
            return re.compile(guarded(pattern, flags) if guard else pattern, flags)

        self.prefix_search = compiled("prefix").search  # anchored at the start: it fails fast already
        self.suffix_search = compiled("suffix", guard=True).search
        self.infixes: Callable[[str], Iterator[re.Match[str]]] = compiled("infix", guard=True).finditer
        self.url_match = compiled("url").match
        self.specials: dict[str, tuple[str, ...]] = (
            {key: tuple(value) for key, value in rules["specials"].items()} if specials else {}
        )
        self.cache: dict[str, tuple[str, ...]] = {}
        # spaCy's special-case matcher: the affix-split form of each special case that affixes would break up
        self.merges: dict[tuple[str, ...], str] = {}
        if specials:
            plain = SpacySplitter(rules, specials=False)
            for key in self.specials:
                if " " in key or self.prefix_search(key) or self.suffix_search(key) or next(self.infixes(key), None):
                    pattern = plain.affix_split(key)
                    if len(pattern) > 1:
                        self.merges[pattern] = key
        self.merge_lengths = sorted({len(p) for p in self.merges}, reverse=True)
        self.merge_heads = {p[0] for p in self.merges}

    def split(self, piece: str) -> tuple[str, ...]:
        """The words of a piece of text without whitespace, as datatrove's ``split_into_words`` gives them."""
        if len(piece) > MAX_PIECE:
            return (piece,)
        words = self.cache.get(piece)
        if words is None and not _surely_spaceless(piece) and _SPACE(piece):
            # Arrow's whitespace is not quite Python's (which spaCy splits on: "\x1f" is one); split the rest here
            words = self.cache[piece] = tuple(w for part in piece.split() for w in self.split(part))
        if words is None:
            if len(self.cache) >= MAX_CACHED:
                self.cache.clear()
            tokens = self.affix_split(piece)
            if len(tokens) > 1 and self.merges:
                tokens = self._merge_specials(tokens)
            # the piece holds no whitespace, so neither do its tokens: datatrove's strip changes nothing
            words = self.cache[piece] = tokens
        return words

    def affix_split(self, piece: str) -> tuple[str, ...]:
        """spaCy's ``_split_affixes`` then ``_attach_tokens``."""
        specials = self.specials
        if piece in specials:
            return specials[piece]
        prefixes: list[str] = []
        suffixes: list[str] = []
        string, last, plain = piece, 0, False
        while string and len(string) != last:
            if string in specials:
                break
            if _plain(string):
                plain = True
                break
            last = len(string)
            pre = _length(self.prefix_search(string))
            if pre:
                prefix, minus_pre = string[:pre], string[pre:]
                if minus_pre in specials:
                    prefixes.append(prefix)
                    string = minus_pre
                    break
            suf = self._suffix_length(string[pre:])
            if suf:
                suffix, minus_suf = string[-suf:], string[:-suf]
                if minus_suf in specials:
                    suffixes.append(suffix)
                    string = minus_suf
                    break
            if pre and suf and pre + suf <= len(string):
                string = string[pre:-suf]
                prefixes.append(prefix)
                suffixes.append(suffix)
            elif pre:
                string = minus_pre
                prefixes.append(prefix)
            elif suf:
                string = minus_suf
                suffixes.append(suffix)
        tokens = prefixes
        if string:
            if string in specials:
                tokens.extend(specials[string])
            elif (plain or _plain(string)) or self.url_match(string):
                tokens.append(string)
            else:
                tokens.extend(self._infix_split(string))
        tokens.extend(reversed(suffixes))
        return tuple(tokens)

    def _suffix_length(self, string: str) -> int:
        """The suffix rule's match, searched in the last ``SUFFIX_TAIL`` characters only: a ``$``-anchored search
        tries every start position, and pieces run long (URLs, code). Exact: every suffix but "..+" is at most 5
        characters with at most 2 of look-behind (``tests/test_quality.py`` checks the shipped rules)."""
        if len(string) > SUFFIX_TAIL and not string.endswith(".."):
            string = string[-SUFFIX_TAIL:]
        return _length(self.suffix_search(string))

    def _infix_split(self, string: str) -> list[str]:
        tokens, start = [], 0
        for match in self.infixes(string):
            begin, end = match.start(), match.end()
            if begin == 0:  # an infix at the very start is not one
                continue
            if begin != start:
                tokens.append(string[start:begin])
            if begin != end:
                tokens.append(string[begin:end])
            start = end
        if string[start:]:
            tokens.append(string[start:])
        return tokens

    def _merge_specials(self, tokens: tuple[str, ...]) -> tuple[str, ...]:
        """Runs of tokens that spell a special case become it ("NNTPError", ")", ":" → "NNTPError", "):"). Longest
        runs win, then the earliest, as spaCy's filter orders them."""
        if self.merge_heads.isdisjoint(tokens):
            return tokens
        found = [
            (start, start + n, key)
            for start in range(len(tokens))
            if tokens[start] in self.merge_heads
            for n in self.merge_lengths
            if start + n <= len(tokens) and (key := self.merges.get(tokens[start : start + n])) is not None
        ]
        if not found:
            return tokens
        found.sort(key=lambda span: (span[1] - span[0], -span[0]))
        seen: set[int] = set()
        chosen = []
        for start, end, key in reversed(found):
            if start not in seen and end - 1 not in seen:
                chosen.append((start, end, key))
            seen.update(range(start, end))
        merged: list[str] = []
        at = 0
        for start, end, key in sorted(chosen):
            merged.extend(tokens[at:start])
            merged.extend(self.specials[key])
            at = end
        merged.extend(tokens[at:])
        return tuple(merged)


_DIGIT_LETTER = re.compile(r"[0-9][^\W\d_]").search
_SPACE = re.compile(r"\s").search


def guarded(pattern: str, flags: int) -> str:
    """``pattern`` behind a look-ahead for the characters any of its matches can begin with, or as it is when that
    set cannot be read off it. The same matches: a match consumes its first character, which the look-ahead
    admits. Faster where most positions can begin none: a search tries every position, and Python's ``re`` tries
    each alternative of spaCy's suffix and infix rules there (with their look-behinds) before failing; the guard
    fails on one class test. The suffix search took half the time, the infix scan two thirds."""
    tree = re_parser.parse(pattern, flags)
    if tree.state.flags & ~re.UNICODE != flags & ~re.UNICODE:  # inline global flags ("(?i)") change the match
        return pattern
    items = _first_chars(list(tree))
    chars = _char_class(items) if items is not None else None
    if chars is None:
        return pattern
    try:  # a global flag, even one that changes nothing ("(?u)"), must stay at the start: not guarded
        return re.compile(f"(?={chars})(?:{pattern})", flags).pattern
    except re.error:
        return pattern


def _first_chars(items: list) -> list | None:
    """The parsed items that can match a match's first character, or None (an empty match is possible, or an
    item is not understood)."""
    for op, av in items:
        if op in (re_constants.ASSERT, re_constants.ASSERT_NOT) and av[0] == -1:
            continue  # a look-behind consumes nothing
        if op is re_constants.AT:
            continue
        if op in (re_constants.LITERAL, re_constants.IN):
            return [(op, av)]
        if op in (re_constants.MAX_REPEAT, re_constants.MIN_REPEAT):
            return _first_chars(list(av[2])) if av[0] > 0 else None
        if op is re_constants.SUBPATTERN:  # a group; one with flags of its own ("(?i:x)") is not read
            return _first_chars(list(av[-1])) if not av[1] and not av[2] else None
        if op is re_constants.BRANCH:
            found = [_first_chars(list(branch)) for branch in av[1]]
            return None if any(f is None for f in found) else [item for f in found for item in f]
        return None
    return None


def _char_class(items: list) -> str | None:
    parts = []
    for op, av in items:
        members = [(op, av)] if op is re_constants.LITERAL else av
        for kind, value in members:
            if kind is re_constants.LITERAL:
                parts.append(re.escape(chr(value)))
            elif kind is re_constants.RANGE:
                parts.append(f"{re.escape(chr(value[0]))}-{re.escape(chr(value[1]))}")
            else:  # a category or a negated set: not worth reading
                return None
    return "[" + "".join(parts) + "]"


def _plain(string: str) -> bool:
    """Letters and digits, no number with a unit: no affix, infix or URL rule applies ("stages.words" lets such
    pieces through whole, and the differential tests hold both to spaCy). Letters alone need no regex."""
    return string.isalnum() and (string.isalpha() or _DIGIT_LETTER(string) is None)


def _surely_spaceless(piece: str) -> bool:
    """True when ``piece`` holds no whitespace, decided without a regex: printable ASCII has none but the space
    (the whitespace Python sees beyond Arrow's is control characters, or not ASCII)."""
    return piece.isascii() and piece.isprintable() and " " not in piece


def _length(match: re.Match[str] | None) -> int:
    return match.end() - match.start() if match is not None else 0


@cache
def spacy_splitter() -> SpacySplitter:
    """The English splitter, built once per process from the shipped rules."""
    return SpacySplitter(shipped_rules())


def shipped_rules() -> dict:
    return json.loads((resources.files("stages") / "data" / "spacy_en_tokenizer.json").read_text(encoding="utf-8"))

"""The quality stage against datatrove's own filters, rule by rule and on a real corpus."""

from __future__ import annotations

import collections
import random

import numpy as np
import pyarrow as pa
import pytest

from schemas.stages import DATATROVE_ORDER, C4Rules, QualityConfig
from stages.quality import quality
from stages.text_stats import NGrams, first_occurrences, repeated_ngram_chars_bound, repeated_ngram_chars_exact
from stages.words import split_words

from .quality_corpus import prose_documents
from .word_corpus import KINDS, kind_documents, kind_lines

PROSE = (
    "The committee met on Tuesday to review the proposal. It was the third meeting of the year, and the "
    "members agreed that the plan should move forward with a few changes. They asked the staff to prepare a "
    "report on the costs and to share it with the public before the next session. Several residents spoke in "
    "favour of the project, while others raised concerns about traffic and noise in the area. The chair "
    "thanked everyone for their time and closed the meeting shortly after seven in the evening."
)


def gibberish(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct made-up words: text without repetition, so only the rule under test can fire."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8))))
    return sorted(words, key=lambda w: rng.random())


def datatrove_verdicts(texts: list[str]) -> list[str | None]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    chain = [("gopher_repetition", GopherRepetitionFilter()), ("gopher_quality", GopherQualityFilter()),
             ("c4", C4QualityFilter()), ("fineweb", FineWebQualityFilter())]  # fmt: skip
    verdicts: list[str | None] = []
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        verdict = None
        for name, step in chain:
            result = step.filter(doc)  # C4 rewrites doc.text, as in a datatrove pipeline
            if result is not True:
                verdict = f"{name}:{result[1] if isinstance(result, tuple) else ''}"
                break
        verdicts.append(verdict)
    return verdicts


def test_agreement_with_datatrove_on_real_prose() -> None:
    texts = prose_documents(1500)
    in_datatrove_order = QualityConfig(order=DATATROVE_ORDER)
    ours = quality(pa.table({"text": texts}), in_datatrove_order).column("q_reason").to_pylist()
    cheap_first = quality(pa.table({"text": texts}), QualityConfig()).column("q_reason").to_pylist()
    assert [r is None for r in cheap_first] == [r is None for r in ours], "the order names drops, not decides them"
    theirs = datatrove_verdicts(texts)
    same = sum((a is None) == (b is None) for a, b in zip(ours, theirs, strict=True))
    agreement = same / len(texts)
    disagreements = collections.Counter((a, b) for a, b in zip(ours, theirs, strict=True) if (a is None) != (b is None))
    print(f"\nkeep/drop agreement with datatrove: {agreement:.4f} on {len(texts)} documents")
    for (a, b), count in disagreements.most_common():
        print(f"  {count:3d}  refinery={a}  datatrove={b}")
    assert agreement >= 0.99
    # Where both drop, the same rule set fires first in the large majority of cases.
    both = [(a, b) for a, b in zip(ours, theirs, strict=True) if a and b]
    assert sum(a.split(":")[0] == b.split(":")[0] for a, b in both) / len(both) >= 0.9


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Too short to be a document.", "gopher_repetition:top_2_gram"),
        (" ".join(PROSE.split()[:40]), "gopher_quality:min_doc_words"),
        (PROSE + "\nlorem ipsum dolor sit amet, consectetur adipiscing elit.", "c4:lorem_ipsum"),
        (PROSE + "\nThe function returns {a: 1} when called.", "c4:curly_bracket"),
        ("the and\n" + "\n".join("- " + " ".join(gibberish(480)[i::60]) for i in range(60)),
         "gopher_quality:max_bullet_lines_ratio"),
        ((PROSE + "\n\n") * 3, "gopher_repetition:dup_para_frac"),
        ("the and " + " ".join("#" + w for w in gibberish(100)), "gopher_quality:max_hash_ratio"),
        ("the and a " + " ".join(str(100_000 + 7919 * i) for i in range(100)), "gopher_quality:min_alpha_words_ratio"),
    ],
)  # fmt: skip
def test_each_rule_names_itself_and_its_value(text: str, reason: str) -> None:
    out = quality(pa.table({"text": [text]}), QualityConfig(order=DATATROVE_ORDER))
    assert out.column("q_reason").to_pylist() == [reason]
    theirs = datatrove_verdicts([text])[0]
    assert theirs is not None and theirs.split(":")[0] == reason.split(":")[0], theirs
    assert out.column("drop_reason").to_pylist() == [reason]
    assert out.column("q_value").to_pylist()[0] == out.column("q_value").to_pylist()[0]  # a number, not NaN


def test_clean_prose_passes_and_keeps_its_signals() -> None:
    out = quality(pa.table({"text": [PROSE]}), QualityConfig())
    assert out.column("q_reason").to_pylist() == [None]
    row = out.to_pylist()[0]
    assert row["q_words"] > 90 and 4 < row["q_avg_word_length"] < 6 and row["q_stop_words"] >= 4
    assert row["q_c4_sentences"] == 5


def test_rules_switch_off_and_tag_only() -> None:
    text = PROSE + "\nlorem ipsum dolor sit amet, consectetur adipiscing elit."
    off = QualityConfig(c4=C4Rules(filter_lorem_ipsum=False))
    assert quality(pa.table({"text": [text]}), off).column("q_reason").to_pylist() == [None]
    tag_only = quality(pa.table({"text": [text]}), QualityConfig(drop=False))
    assert "drop_reason" not in tag_only.column_names
    assert tag_only.column("q_reason").to_pylist() == ["c4:lorem_ipsum"]


def test_words_match_spacy() -> None:
    from datatrove.utils.text import split_into_words

    texts = [
        "Hello, world... It's (really) well-known: U.S. e.g. 3.14 1,000 10:30 don't can't I'm http://x.com/a?b=c",
        '#tag -- a--b a/b $5 50% “quoted” end. • bullet\n- dash\n\nnew para!!! ok?! ("nested").',
    ]
    words = split_words(pa.array(texts))
    for i, text in enumerate(texts):
        assert words.tokens.filter(pa.array(words.doc == i)).to_pylist() == split_into_words(text)


def test_the_shipped_word_rules_are_the_pinned_spacys() -> None:
    import json
    from pathlib import Path

    from .spacy_rules import export

    shipped = json.loads((Path(__file__).parents[1] / "stages" / "data" / "spacy_en_tokenizer.json").read_text())
    assert shipped == json.loads(json.dumps(export())), "regenerate: python -m tests.spacy_rules > stages/data/…"


def test_whitespace_arrow_and_python_disagree_on_is_split_as_spacy_does() -> None:
    from datatrove.utils.text import split_into_words

    texts = ["a\x1fb c", "x\x1c(y)", "end.\u2028next", "a\u00a0b", "q\u200bz", "tab\there,\x0bvt"]
    words = split_words(pa.array(texts))
    for i, text in enumerate(texts):
        assert words.tokens.filter(pa.array(words.doc == i)).to_pylist() == split_into_words(text), repr(text)


def test_a_pathological_piece_costs_bounded_time() -> None:
    import time

    from stages.spacy_words import MAX_PIECE

    start = time.perf_counter()
    words = split_words(pa.array(["(" * 1_000_000 + "a", "ok (" * 3 + "fine).", "(" * (MAX_PIECE - 1) + "a"]))
    assert time.perf_counter() - start < 5, "affixes are peeled one at a time: a huge piece must not go through"
    assert words.count().tolist() == [1, 3 + 3 + 3, MAX_PIECE]


def test_the_suffix_rule_sees_only_a_pieces_tail() -> None:
    """``SpacySplitter`` searches suffixes in a piece's last ``SUFFIX_TAIL`` characters: exact only while every
    suffix but "..+" is at most 5 characters with at most 2 of look-behind. Checked on the shipped rules, and
    against the whole-piece search on every distinct piece of the markup corpus."""
    import re._constants as C
    import re._parser as parser

    from stages.spacy_words import SUFFIX_TAIL, shipped_rules, spacy_splitter

    splitter = spacy_splitter()
    tree = parser.parse(shipped_rules()["suffix"]["pattern"], shipped_rules()["suffix"]["flags"])
    (branch,) = [av for op, av in tree if op == C.BRANCH]
    widths = [alt.getwidth()[1] for alt in branch[1]]
    unbounded = [str(alt) for alt, w in zip(branch[1], widths, strict=True) if w > 5]
    assert len(unbounded) == 1 and unbounded[0].startswith(
        "[(LITERAL, 46), (MAX_REPEAT, (1, MAXREPEAT, [(LITERAL, 46)"
    ), unbounded

    def behind(items: list) -> list[int]:
        found = []
        for op, av in items:
            if op in (C.ASSERT, C.ASSERT_NOT) and av[0] == -1:
                found.append(av[1].getwidth()[1])
            elif op == C.BRANCH:
                found += [w for alt in av[1] for w in behind(alt)]
            elif op == C.SUBPATTERN:
                found += behind(av[-1])
        return found

    assert max(widths[i] for i in range(len(widths)) if widths[i] <= 5) + max(behind(tree)) == SUFFIX_TAIL
    pieces = {p for line in kind_lines("markup", 3000) + kind_lines("code", 3000) for p in line.split()}
    for piece in pieces:
        full = splitter.suffix_search(piece)
        assert splitter._suffix_length(piece) == (full.end() - full.start() if full else 0), piece


def test_guarded_rules_match_exactly_where_spacys_do() -> None:
    """The suffix and infix rules run behind a look-ahead for the characters their matches begin with
    (``stages.spacy_words.guarded``): the same matches as spaCy's own patterns on every distinct piece of real
    lines of every kind, on their tails (as the suffix search sees them) and on 50,000 random strings of the
    characters the rules look at. A pattern whose first characters cannot be read is left as it is."""
    import re

    from stages.spacy_words import guarded, shipped_rules

    rules = shipped_rules()
    rng = random.Random(11)
    alphabet = ".,:;-–—~+*^/<>=…'\"()[]{}!?%$&#@_`|0123456789aAzZéÉßΩω中😀©°½ \u00a0"
    texts = {p for kind in KINDS for line in kind_lines(kind, 3000) for p in line.split()}
    texts |= {p[-7:] for p in texts} | {"".join(rng.choices(alphabet, k=rng.randint(1, 9))) for _ in range(50_000)}
    for name in ("suffix", "infix"):
        pattern, flags = rules[name]["pattern"], rules[name]["flags"]
        fast = guarded(pattern, flags)
        assert fast.startswith("(?=["), f"the {name} rule is not guarded"
        spacy, ours = re.compile(pattern, flags), re.compile(fast, flags)
        differ = [t for t in texts if [m.span() for m in spacy.finditer(t)] != [m.span() for m in ours.finditer(t)]]
        assert not differ, (name, differ[:5])
    assert guarded("(?<=a)b|c+", 0) == "(?=[bc])(?:(?<=a)b|c+)"
    assert guarded("a*b", 0) == "a*b" and guarded(r"\w+", re.UNICODE) == r"\w+"
    for flagged in ("(?i:x)y", "(?i)xy", "(?u)x|y"):  # inline flags: left as they are
        assert guarded(flagged, re.UNICODE) == flagged


def test_numbers_split_by_arrow_are_split_as_spacy_does() -> None:
    """Numbers skip spaCy's rules (``stages.words.NUMBER``): 20,000 random ones of every form the pattern admits
    (sign, fraction, exponent, a closing mark), the special cases of that shape, and near misses the pattern must
    leave to the rules, against datatrove's spaCy splitting, one document each."""
    import random
    import re

    from datatrove.utils.text import split_into_words

    from stages.spacy_words import spacy_splitter
    from stages.words import NUMBER

    rng = random.Random(7)

    def digits() -> str:
        return "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 1, 2, 3, 5, 12, 18])))

    def number() -> str:
        text = rng.choice(["", "", "-", "+"]) + digits()
        text += "." + digits() if rng.random() < 0.6 else ""
        text += rng.choice("eE") + rng.choice(["", "+", "-"]) + digits() if rng.random() < 0.4 else ""
        return text + rng.choice(["", "", "", ",", ";", ":", ")", "]"])

    shaped = [k for k in spacy_splitter().specials if re.fullmatch(NUMBER, k)]
    near = ["1.2.3", "1.2.3.4", "192.168.0.1", "1e", "1.", ".5", "5%", "(5)", "5),", "8)", "-8)", "1,000", "3:30"]
    pieces = [number() for _ in range(20_000)] + shaped + near
    assert sum(bool(re.fullmatch(NUMBER, p)) for p in pieces) > 20_000 and "8)" in shaped
    words = split_words(pa.array(pieces))
    ours: list[list[str]] = [[] for _ in pieces]
    for token, doc in zip(words.tokens.to_pylist(), words.doc.tolist(), strict=True):
        ours[doc].append(token)
    differ = [(p, o) for p, o in zip(pieces, ours, strict=True) if o != split_into_words(p)]
    assert not differ, differ[:5]


@pytest.mark.parametrize("kind", KINDS)
def test_words_equal_spacys_on_real_lines_of_every_kind(kind: str) -> None:
    """A differential test: datatrove's split_into_words (spaCy) and ours on thousands of real lines."""
    from datatrove.utils.text import split_into_words

    lines = kind_lines(kind, 3000)
    assert len(lines) >= 3000, f"only {len(lines)} lines of {kind} text on this machine"
    words = split_words(pa.array(lines))
    ours: list[list[str]] = [[] for _ in lines]
    for token, doc in zip(words.tokens.to_pylist(), words.doc.tolist(), strict=True):
        ours[doc].append(token)
    differ = [(line, o) for line, o in zip(lines, ours, strict=True) if o != split_into_words(line)]
    print(f"\n{kind}: {len(lines) - len(differ)}/{len(lines)} lines split exactly as spaCy does")
    assert not differ, differ[:3]


def test_keep_drop_agreement_with_datatrove_on_every_kind_of_text() -> None:
    total = same_total = 0
    for kind in KINDS:
        docs = kind_documents(kind, 400)
        assert len(docs) >= 90, f"only {len(docs)} documents of {kind} text on this machine"
        ours = quality(pa.table({"text": docs}), QualityConfig(order=DATATROVE_ORDER)).column("q_reason").to_pylist()
        theirs = datatrove_verdicts(docs)
        same = sum((a is None) == (b is None) for a, b in zip(ours, theirs, strict=True))
        both = [(a, b) for a, b in zip(ours, theirs, strict=True) if a and b]
        same_rule = sum(a.split(":")[0] == b.split(":")[0] for a, b in both)
        kept = sum(b is None for b in theirs)
        print(f"\n{kind}: keep/drop agreement {same / len(docs):.4f} on {len(docs)} documents "
              f"({kept} kept by datatrove); same first rule on {same_rule}/{len(both)} of those both drop")  # fmt: skip
        assert same / len(docs) >= 0.99 and same_rule / max(len(both), 1) >= 0.95
        total, same_total = total + len(docs), same_total + same
    assert same_total / total >= 0.995


def test_greedy_repeated_ngrams_equal_datatrove() -> None:
    """Our n-grams compare word sequences; datatrove's compare "".join(words), so ["ab", "c"] equals ["a", "bc"]
    there. The words here (all "w" + one digit) join unambiguously, so the two must agree exactly."""
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate

    from stages.minhash import word_hashes

    rng = random.Random(0)
    for _ in range(500):
        vocab = [f"w{i}" for i in range(rng.randint(1, 6))]
        docs = [[rng.choice(vocab) for _ in range(rng.randint(0, 50))] for _ in range(2)]
        n = rng.randint(2, 10)
        words = docs[0] + docs[1]
        if len(words) < n:
            continue
        owner = np.array([0] * len(docs[0]) + [1] * len(docs[1]))
        grams = NGrams(word_hashes(pa.array(words, pa.string())), np.array([len(w) for w in words]), owner)
        bound = repeated_ngram_chars_bound(grams, n, 2)
        first_occurrences(grams, n, np.array([True, True]))
        for d, start in ((0, 0), (1, len(docs[0]))):
            expected = find_all_duplicate(docs[d], n)
            assert repeated_ngram_chars_exact(grams, n, start, len(docs[d])) == expected
            assert bound[d] >= expected


def test_odd_text_is_handled_by_rule() -> None:
    texts = [
        "control\x00chars\x07 " * 40,
        "MÃ©tÃ©o franÃ§aise: le temps sera ensoleillÃ© demain " * 10,
        "1234 5678 !!! ??? ... --- " * 50,
        "word" * 12_000_000,  # one 48 MB line without a space
    ]
    out = quality(pa.table({"text": texts}), QualityConfig())
    reasons = out.column("q_reason").to_pylist()
    assert all(reasons), "none of these is a usable document, and each gets a named reason"
    assert reasons[3] == "gopher_quality:min_doc_words"


def test_c4_rewrites_only_the_documents_it_keeps() -> None:
    """A dropped document keeps the text it was dropped for (its length in docs/, its text in dropped/), as
    datatrove's C4 filter rewrites a document only when it passes; a kept one gets C4's lines."""
    import pyarrow as pa

    from schemas.stages import QualityConfig
    from stages.quality import quality

    sentences = " ".join(f"The committee met on day {k} and agreed on the budget for the year." for k in range(6))
    kept = f"{sentences}\nshare this page\n{sentences}"
    dropped = "A short note without enough sentences.\nmenu item"
    off = {"enabled": False}
    config = QualityConfig.model_validate({"gopher_quality": off, "gopher_repetition": off, "fineweb": off})
    out = quality(pa.table({"text": [kept, dropped]}), config)
    assert out.column("drop_reason").to_pylist() == [None, "c4:too_few_sentences"]
    assert out.column("text").to_pylist() == [f"{sentences}\n{sentences}", dropped]


def test_line_and_stop_word_signals_are_datatroves_formulas_on_awkward_text() -> None:
    """Gopher's bullet, ellipsis and stop-word counts as datatrove computes them (``splitlines()``, ``lstrip()`` /
    ``rstrip()`` of Python's whitespace, ``stop_words.intersection(set(words))``, case included), read from the
    lines split once for C4 and Gopher: line breaks of every kind, indents Arrow's whitespace does not share."""
    from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS

    from stages.spacy_words import spacy_splitter

    pieces = ["- item", "\xa0- nbsp item", "\u3000• wide", "\t-tab", "not - a bullet", "ends...", "ends…  \t",
              "mid... dle", "The the and", "THE be to", "", "   ", "of with that", "... \xa0", "•"]  # fmt: skip
    breaks = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\n\n"]
    rng = random.Random(5)
    texts = []
    for _ in range(300):
        parts = rng.choices(pieces, k=rng.randint(1, 8))
        text = "".join(p + rng.choice(breaks) for p in parts[:-1]) + parts[-1] + rng.choice(["", *breaks])
        texts.append(text + " " + " ".join(gibberish(60, rng.randint(0, 10**6))))
    out = quality(pa.table({"text": texts}), QualityConfig(drop=False)).to_pylist()
    splitter = spacy_splitter()
    for text, row in zip(texts, out, strict=True):
        lines = text.splitlines()
        bullets = sum(s.lstrip().startswith("•") or s.lstrip().startswith("-") for s in lines) / len(lines)
        ellipsis = sum(s.rstrip().endswith("...") or s.rstrip().endswith("…") for s in lines) / len(lines)
        words = [w for piece in text.split() for w in splitter.split(piece)]
        assert row["q_bullet_lines_ratio"] == pytest.approx(bullets), repr(text)
        assert row["q_ellipsis_lines_ratio"] == pytest.approx(ellipsis), repr(text)
        assert row["q_stop_words"] == len(set(STOP_WORDS).intersection(words)), repr(text)


def test_runs_of_newlines_split_as_re_split_does() -> None:
    """``split_runs`` replaces ``re.split(r"\\n+", text)`` (Gopher's duplicate lines) with a literal split."""
    import re

    from stages.text_stats import split_runs

    rng = random.Random(3)
    texts = ["", "\n", "\n\n", "a", "a\n", "\na", "a\n\n\nb\n"]
    texts += ["".join(rng.choice("ab\n\n\n é") for _ in range(rng.randint(0, 30))) for _ in range(2000)]
    parts, owner, counts = split_runs(pa.array(texts), "\n")
    got: list[list[str]] = [[] for _ in texts]
    for part, doc in zip(parts.to_pylist(), owner, strict=True):
        got[doc].append(part)
    assert got == [re.split(r"\n+", t) for t in texts]
    assert counts.tolist() == [len(g) for g in got]


def test_c4_lines_agree_with_datatrove_on_every_line_rule() -> None:
    """C4 alone against datatrove's ``C4QualityFilter`` on documents made of lines that each trip one line rule
    (lorem ipsum, javascript, curly bracket, policy, citations, a word over 1,000 characters, no terminal
    punctuation, an ellipsis, too few words; sentences joined by no-break or ideographic spaces) in every order:
    the same verdicts, and the same rewritten text for the documents kept. Each check only sees the lines the
    earlier ones kept, so the order matters."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter

    fragments = ["Lorem ipsum dolor sit amet.", "Enable JavaScript to view this page.", "function() { return 1; }.",
                 "See the privacy policy here.", "A line with a citation [1] that ends.", "x" * 1200 + " long word.",
                 "[edit] Another one with [citation needed].", "Short.", "Three words here.", "Ends with ellipsis...",
                 "A normal sentence. Another one! And a question?", "  spaced  line  .  ", "word " * 300 + "end.",
                 '"Quoted ending."', "{curly} lorem ipsum both.", "javascript {", "No terminal punct",
                 *(sep.join(f"The river number {k} runs to the sea." for k in range(3)) for sep in "\xa0\u3000\u2003")
                 ]  # fmt: skip
    rng = random.Random(1)
    texts = ["\n".join(rng.choices(fragments, k=rng.randint(1, 9))) + rng.choice(["", "\n", "\r\n"])
             for _ in range(2000)]  # fmt: skip
    off = {"enabled": False}
    config = QualityConfig.model_validate({"gopher_quality": off, "gopher_repetition": off, "fineweb": off})
    rows = quality(pa.table({"text": texts}), config).to_pylist()
    reference = C4QualityFilter()
    for text, row in zip(texts, rows, strict=True):
        doc = Document(text=text, id="0")
        verdict = reference.filter(doc)
        assert row["drop_reason"] == (None if verdict is True else f"c4:{verdict[1]}"), repr(text)
        if verdict is True:
            assert row["text"] == doc.text, repr(text)

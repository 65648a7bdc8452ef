"""Final-answer extraction from a model's answer text, and normalised string comparison."""

from __future__ import annotations

import re
import unicodedata

ANSWER_IS = re.compile(r"(?i)(?:final answer|the answer)\s*(?:is|:)\s*:?\s*(.+?)\s*(?:\.\s*$|\.\s+|\n|$)")
#: A choice letter alone ("(C)", "Answer: C"): capital letters, not the "a" of a sentence.
CHOICE = re.compile(r"(?:(?i:answer)\s*(?:is|:)?\s*)?\(?([A-E])\)?\.?")
NUMBER = re.compile(r"(?:(?<![\w)\]}])-\s*)?\d[\d,]*(?:\.\d+)?(?:/\d+)?(?:\s+[A-Za-z]+\b(?=\s*[.,;!?]?\s*$))?")
#: A relation other than "=" on the answer's last line: the answer is a condition, not a value to compare.
RELATION = re.compile(r"!=|<=|>=|[<>≠≤≥]|\\n?eq\b|\\[lg]e(?:q)?\b|\\ne\b")
#: A word of three letters or more outside LaTeX commands: the text is a sentence, not an expression.
WORDS = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
BOX_SPACE = re.compile(r"\\boxed\s+\{")


class UnbalancedBoxError(ValueError):
    """``\\boxed{`` without its closing brace."""


def _box_end(text: str, start: int) -> int:
    """Index of the brace closing the ``\\boxed{`` at ``start``."""
    depth = 0
    for j in range(start + len("\\boxed"), len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise UnbalancedBoxError("\\boxed{ is never closed")


def last_boxed(text: str) -> str | None:
    """Content of the last top-level ``\\boxed{…}`` (nested braces allowed; a box inside it stays in it, so
    ``\\boxed{5 or \\boxed{6}}`` is not 6); raises if its braces never close."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    end = _box_end(text, start)
    outer = text.rfind("\\boxed{", 0, start)
    while outer >= 0:  # a box that opens earlier and closes after this one holds it
        try:
            outer_end = _box_end(text, outer)
        except UnbalancedBoxError:
            outer_end = -1
        if outer_end > end:
            start, end = outer, outer_end
        outer = text.rfind("\\boxed{", 0, outer)
    return text[start + len("\\boxed{") : end]


def extract_answer(text: str) -> tuple[str | None, str]:
    """``(answer, how)``: a boxed expression, "the answer is …", a choice letter alone, the whole text when it is
    a bare expression (an r1_zero ``<answer>`` often is), the right side of a last "=", else the last number."""
    text = BOX_SPACE.sub("\\\\boxed{", text)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip(), "boxed"
    found = ANSWER_IS.findall(text)
    if found:
        return found[-1].strip().rstrip("."), "answer_is"
    choice = CHOICE.fullmatch(text.strip())
    if choice:
        return choice.group(1), "choice"
    bare = text.strip().strip("$").strip()
    if bare and len(bare) <= 200 and "\n" not in bare and not WORDS.search(TEXT_COMMANDS.sub("", bare)):
        return bare, "expression"
    last_line = text.strip().splitlines()[-1] if text.strip() else ""
    if RELATION.search(last_line):
        return None, "none"
    if "=" in last_line:
        right = last_line.rsplit("=", 1)[1].strip().rstrip(".").strip("$").strip()
        if right and len(right) <= 100 and not WORDS.search(right):
            return right, "equals"
    numbers = NUMBER.findall(text)
    if numbers:
        number, _, word = numbers[-1].strip().partition(" ")
        number = re.sub(r"[\s,]", "", number)
        return (f"{number} {word.strip()}" if word.strip() else number), "last_number"
    return None, "none"


TEXT_COMMANDS = re.compile(
    r"\\(?:text|textbf|textit|textrm|textup|textnormal|mathrm|mathbf|mathit|mbox|operatorname)\s*(?=\{)"
)
LATEX_SPACE = re.compile(r"\\[,;:! ]|~|\\q?quad(?![A-Za-z])")
CHOICE_ONLY = re.compile(r"[(\[]?([a-e])[)\]]?")


def normalize(value: str) -> str:
    """Case, width, spacing, grouping braces, a surrounding $…$, a final period and text commands
    (``\\text{…}``) do not count in a string comparison; operators and brackets do (``x+y`` is not ``x-y``,
    ``[a, b]`` is not ``(a, b)``), and a choice letter may stand in parentheses: ``\\text{(B)}`` is ``b``."""
    value = unicodedata.normalize("NFKC", value).strip().strip("$")
    value = LATEX_SPACE.sub(" ", TEXT_COMMANDS.sub("", value)).replace("\\{", "\x00").replace("\\}", "\x01")
    value = re.sub(r"[{}]", "", value).replace("\x00", "\\{").replace("\x01", "\\}")
    value = " ".join(value.lower().split()).rstrip(".").strip()
    choice = CHOICE_ONLY.fullmatch(value.replace(" ", ""))
    return choice.group(1) if choice else value


def looks_like_math(value: str) -> bool:
    return bool(re.search(r"[\d\\^{}=+*/<>|-]", value))


#: Thousands separators inside a number: ``1\\,000\\,000``, ``1{,}000``, ``1\\ 000``, ``1 000`` (math-verify reads
#: the spaces as products or sums: ``12 345`` was 357).
DIGIT_SEPARATOR = re.compile(r"(?<=\d)(?:\\[,;: !]|\{,\}|~| )(?=\d{3}(?!\d))")
#: Digits still apart after that (``2\\,5``, ``1 00``): no reading of them is safe.
SPACED_DIGITS = re.compile(r"\d(?:\s|\\[,;:! ]|~|\\q?quad(?![A-Za-z]))+\d")
DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
PERCENT = re.compile(r"\\?%")


PERCENT_SPELLINGS = re.compile(r"(?:\s|\\[,;:! ]|~)*(?:\\text\s*\{\s*(?:%|percent)\s*\}|\\%|%|\\text\s*\{\s*\\%\s*\})")
SCIENTIFIC = re.compile(r"^(-?\d+(?:\.\d+)?)[eE]([+-]?\d+)$")
#: ``\\mathrm{i}``, ``\\mathrm{e}``, ``\\mathit{x}``: one letter in a math font is that letter (math-verify drops
#: them as units: 2+\\mathrm{i} became 2+).
MATH_LETTER = re.compile(r"\\(?:mathrm|mathit|operatorname|mathbf)\s*\{\s*([A-Za-z])\s*\}")
WRAPPED_BRACES = re.compile(r"\{\s*(\\(?:text|mathrm|mbox|textrm|textnormal|textup)\s*\{[^{}]*\})\s*\}")


def canonical(value: str) -> str:
    """One spelling for what math-verify reads differently: $…$ delimiters off, separators out of numbers,
    percent as ``\\%`` (``\\text{ percent}``, ``％``), ``2.5e3`` as ``2.5\\cdot10^{3}``, ``\\varnothing`` as
    ``\\emptyset``, ``\\lbrack``/``\\rbrack`` as brackets, ``{\\text{m}}`` as ``\\text{m}``."""
    value = unicodedata.normalize("NFKC", value).strip()
    if len(value) > 1 and value.startswith("$") and value.endswith("$") and not value.endswith("\\$"):
        value = value.strip("$").strip()
    value = DIGIT_SEPARATOR.sub("", value).replace("\\varnothing", "\\emptyset")
    value = PERCENT_SPELLINGS.sub("\\\\%", value)
    value = WRAPPED_BRACES.sub(r"\1", value)
    value = MATH_LETTER.sub(r"\1", value)
    value = SCIENTIFIC.sub(r"\1\\cdot10^{\2}", value)
    return value.replace("\\lbrack", "[").replace("\\rbrack", "]")


#: Answers longer than this are not judged: no boxed final answer is, and the checks would cost more than the
#: verdict is worth.
MAX_ANSWER_CHARS = 1000


def strip_trailing(value: str) -> str:
    """``value`` without trailing spaces, punctuation, ``$`` and spacing commands (one at a time: no regex runs
    back over a long run of them)."""
    while True:
        trimmed = value.rstrip(" \t\n.,;:$~")
        for tail in ("\\,", "\\;", "\\:", "\\!", "\\ ", "\\text{.}", "\\text{,}", "\\text{ .}"):
            if trimmed.endswith(tail):
                trimmed = trimmed[: -len(tail)]
        if trimmed == value:
            return value
        value = trimmed


#: Letters ending an expression (``2ab``, ``\\frac12ab``), not a LaTeX command's name.
TRAILING_LETTERS = re.compile(r"(?<![\\A-Za-z])([A-Za-z]{1,3})\s*$")


def parse_dropped_tail(value: str, parsed: str) -> bool:
    """math-verify read ``value`` without the letters it ends with (its unit heuristic cuts ``2ab`` to 2)."""
    tail = TRAILING_LETTERS.search(value)
    return tail is not None and not parsed.rstrip().rstrip("}").rstrip().endswith(tail.group(1))


def spaced_digits(value: str) -> bool:
    return bool(SPACED_DIGITS.search(value))


def _bare(value: str) -> str:
    """Brackets and content without \\left/\\right, spacing, grouping braces and plus signs."""
    return re.sub(r"\\left|\\right|\\[,;:! ]|~|\s|\+|(?<!\\)[{}]", "", canonical(value))


CLOSED_AT_INFINITY = re.compile(r"\\infty\]|\[-?\\infty")


def closed_at_infinity(answer: str, truth: str) -> bool:
    """An interval closed at infinity (``[2, \\infty]``): sympy reads it as open there, a grader calls it wrong."""
    return bool(CLOSED_AT_INFINITY.search(_bare(answer))) and not CLOSED_AT_INFINITY.search(_bare(truth))


def delimiters(value: str) -> str | None:
    bare = _bare(strip_trailing(value.strip()))
    bare = re.sub(r"^(?:\\displaystyle)?(?:[A-Za-z]\w*(?:=|\\in))", "", bare)
    if bare.startswith("\\{") and bare.endswith("\\}"):
        return "set"
    if bare[:1] in ("(", "[") and bare[-1:] in (")", "]"):
        return "bracket"
    return None


def structures_differ(answer: str, truth: str) -> bool:
    """A set against a tuple or an interval: math-verify lets ``\\{1,2\\}`` equal ``(1,2)``."""
    return {delimiters(answer), delimiters(truth)} == {"set", "bracket"}


def in_radians(value: str) -> str:
    """Degrees written as radians: ``60^\\circ`` becomes ``60\\cdot\\frac{\\pi}{180}``."""
    return DEGREES.sub(r"\\cdot\\frac{\\pi}{180}", value)


def without_percent(value: str) -> str:
    return PERCENT.sub("", value)


def percent_twice(answer: str, truth: str) -> bool:
    return len(PERCENT.findall(answer)) > max(1, len(PERCENT.findall(truth)))

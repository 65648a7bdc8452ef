"""Final-answer extraction from a model's answer text, and normalised string comparison."""

from __future__ import annotations

import re
import unicodedata

ANSWER_IS = re.compile(r"(?i)(?:final answer|the answer)\s*(?:is|:)\s*:?\s*(.+?)\s*(?:\.\s*$|\.\s+|\n|$)")
CHOICE = re.compile(r"(?i)(?:answer\s*(?:is|:)?\s*|^\s*)\(?([A-E])\)?(?:[.)]|\s*$)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


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
    """``(answer, how)``: a boxed expression, "the answer is …", a choice letter, else the last number."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip(), "boxed"
    found = ANSWER_IS.findall(text)
    if found:
        return found[-1].strip().rstrip("."), "answer_is"
    choice = CHOICE.findall(text.strip())
    if choice:
        return choice[-1].upper(), "choice"
    numbers = NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", ""), "last_number"
    return None, "none"


TEXT_COMMANDS = re.compile(
    r"\\(?:text|textbf|textit|textrm|textup|textnormal|mathrm|mathbf|mathit|mbox|operatorname)\s*(?=\{)"
)
LATEX_SPACE = re.compile(r"\\[,;:! ]|~|\\q?quad\b")
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
SPACED_DIGITS = re.compile(r"\d(?:\s|\\[,;:! ]|~)+\d")
DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
PERCENT = re.compile(r"\\?%")


def canonical(value: str) -> str:
    """One spelling for what math-verify reads differently: separators out of numbers, ``\\varnothing`` as
    ``\\emptyset``, ``\\lbrack``/``\\rbrack`` as brackets."""
    value = DIGIT_SEPARATOR.sub("", value).replace("\\varnothing", "\\emptyset")
    return value.replace("\\lbrack", "[").replace("\\rbrack", "]")


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
    bare = _bare(value)
    if bare.startswith("\\{") and bare.endswith("\\}"):
        return "set"
    if bare[:1] in ("(", "[") and bare[-1:] in (")", "]"):
        return "bracket"
    return None


def structures_differ(answer: str, truth: str) -> bool:
    """A set against a tuple or an interval: math-verify lets ``\\{1,2\\}`` equal ``(1,2)``."""
    return {delimiters(answer), delimiters(truth)} == {"set", "bracket"}


#: A unit after a number: ``5\\text{ cm}``, ``5\\,\\mathrm{m}``, ``5~{\\rm cm}^2``, ``12 meters``, ``5 m/s``.
_SPACING = r"(?:\s|\\[,;:! ]|~|\\q?quad\b)*"
UNIT = re.compile(
    r"\d" + _SPACING + r"(?:\\(?:text|mbox|mathrm|textrm|textnormal|textup|operatorname|mathit|textit)\s*"
    r"\{([^{}]*)\}|\{\\rm\s+([^{}]*)\}|([A-Za-z]+(?:/[A-Za-z]+)?))(?:\^\s*\{?\s*(\d)\s*\}?)?$"
)
TRAILING = re.compile(r"(?:\s|[.,;:$]|\\text\s*\{\s*[.,;:]?\s*\}|\\[,;:! ]|~)+$")
#: Unit symbols (case matters: mm is not Mm) and words (case does not), each to one name.
UNIT_SYMBOLS = {
    "mm": "millimeter", "cm": "centimeter", "m": "meter", "km": "kilometer", "in": "inch", "ft": "foot",
    "g": "gram", "kg": "kilogram", "mg": "milligram", "s": "second", "sec": "second", "min": "minute",
    "mins": "minute", "h": "hour", "hr": "hour", "hrs": "hour", "l": "liter", "L": "liter", "ml": "milliliter",
    "mL": "milliliter", "mph": "mile/hour", "yd": "yard", "mi": "mile", "lb": "pound", "lbs": "pound",
    "oz": "ounce", "rad": "radian",
}  # fmt: skip
UNIT_WORDS = {"metre": "meter", "centimetre": "centimeter", "millimetre": "millimeter", "kilometre": "kilometer",
              "feet": "foot", "inche": "inch", "litre": "liter", "minut": "minute", "cent": "cent"}  # fmt: skip


def _unit_name(raw: str) -> str:
    raw = " ".join(LATEX_SPACE.sub(" ", raw).split())
    if raw in UNIT_SYMBOLS:
        return UNIT_SYMBOLS[raw]
    if "/" in raw:
        return "/".join(_unit_name(part) for part in raw.split("/"))
    if len(raw) <= 3:  # a symbol the table lacks keeps its case: Mm is not mm
        return raw
    word = raw.lower()
    word = word[:-2] if word.endswith("es") and word[:-2] in UNIT_WORDS else word
    word = word[:-1] if word.endswith("s") and len(word) > 3 and not word.endswith("ss") else word
    return UNIT_WORDS.get(word, word)


def unit_of(value: str) -> str | None:
    """The unit a value names (``percent``, ``degree``, ``dollar`` or the word after its number, singular, with
    its power: ``centimeter^2``), or None. A bare letter after a number counts only when a space parts them and
    it is a unit symbol (``5 m``, not ``2x``)."""
    value = TRAILING.sub("", value.strip())
    if PERCENT.search(value[-2:]):
        return "percent"
    if DEGREES.search(value):
        return "degree"
    found = UNIT.search(value)
    if found is not None:
        wrapped, roman, bare, power = found.groups()
        spaced = found.start(3) > found.start() + 1  # something parts the number and a bare unit
        if bare is not None and len(bare) == 1 and (not spaced or bare not in UNIT_SYMBOLS):
            return None
        name = _unit_name(wrapped or roman or bare or "")
        if name:
            return f"{name}^{power}" if power else name
    if re.match(r"\s*(?:\\\$|\$(?=\s*\d))", value):  # \$5 or $5, not the $ of $\frac{1}{2}$
        return "dollar"
    return None


def names_a_unit(value: str) -> bool:
    """A unit word or symbol after the number (``5\\text{ cm}``), not percent, degrees or currency."""
    return unit_of(value) not in (None, "percent", "degree", "dollar")


def without_unit(value: str) -> str:
    """The value without the unit word after its number (``12 meters`` → ``12``: math-verify reads bare words as
    products of letters); percent, degrees and currency stay, math-verify reads them."""
    value = TRAILING.sub("", value.strip())
    found = UNIT.search(value)
    return value[: found.start() + 1] if found is not None and unit_of(value) is not None else value


def units_differ(answer: str, truth: str) -> bool:
    """Both name a unit and the units are not the same: math-verify drops units, so 5 m would equal 5 cm."""
    ours, theirs = unit_of(answer), unit_of(truth)
    return ours is not None and theirs is not None and ours != theirs


def in_radians(value: str) -> str:
    """Degrees written as radians: ``60^\\circ`` becomes ``60\\cdot\\frac{\\pi}{180}``."""
    return DEGREES.sub(r"\\cdot\\frac{\\pi}{180}", value)


def without_percent(value: str) -> str:
    return PERCENT.sub("", value)


def percent_twice(answer: str, truth: str) -> bool:
    return len(PERCENT.findall(answer)) > max(1, len(PERCENT.findall(truth)))

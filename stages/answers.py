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


#: A unit at the end of a value: words in text mode after anything (``16\pi\text{ cm}^2``, ``x\,\text{m}``,
#: ``5\text{ km}\cdot\text{s}^{-1}``, ``{\rm cm}``), or a bare word after a number (``12 meters``, ``7kg``, ``5 m``).
UNIT_TOKEN = re.compile(
    r"(?:\\(?P<cmd>text|mbox|textrm|textnormal|textup|mathrm|operatorname)\s*\{(?P<wrapped>[^{}]*)\}"
    r"|\{\\rm\s+(?P<roman>[^{}]*)\}|\\rm\s+(?P<rm>[A-Za-z]+))(?:\^\s*\{?\s*(?P<power>-?\d+)\s*\}?)?$"
)
UNIT_JOIN = re.compile(r"(?:\s|\\[,;:! ]|~|\\cdot|/|\\q?quad(?![A-Za-z]))*$")
BARE_UNIT = re.compile(r"\d(?P<gap>\s*)(?P<word>[A-Za-z]+(?:/[A-Za-z]+)?)(?:\^\s*\{?\s*(?P<power>-?\d+)\s*\}?)?$")
#: Unit symbols (case matters: mm is not Mm) and words (case does not), each to one name.
UNIT_SYMBOLS = {
    "mm": "millimeter", "cm": "centimeter", "m": "meter", "km": "kilometer", "Km": "kilometer", "KM": "kilometer",
    "in": "inch", "ft": "foot", "g": "gram", "kg": "kilogram", "mg": "milligram", "s": "second", "sec": "second",
    "min": "minute", "mins": "minute", "h": "hour", "hr": "hour", "hrs": "hour", "yr": "year", "yrs": "year",
    "l": "liter", "L": "liter", "ml": "milliliter", "mL": "milliliter", "mph": "mile/hour", "yd": "yard",
    "mi": "mile", "lb": "pound", "lbs": "pound", "oz": "ounce", "rad": "radian", "gal": "gallon", "N": "newton",
    "kN": "kilonewton", "J": "joule", "kJ": "kilojoule", "W": "watt", "kW": "kilowatt", "V": "volt", "A": "ampere",
    "ms": "millisecond", "Hz": "hertz", "K": "kelvin", "Pa": "pascal", "secs": "second", "kgs": "kilogram",
    "deg": "degree",
}  # fmt: skip
UNIT_WORDS = {"metre": "meter", "centimetre": "centimeter", "millimetre": "millimeter", "kilometre": "kilometer",
              "feet": "foot", "litre": "liter", "people": "person", "children": "child"}  # fmt: skip
#: Unit names an answer may add or leave out (with the number unchanged); any other word an answer adds is
#: judged as a word, not dropped.
KNOWN_UNITS = frozenset(UNIT_SYMBOLS.values()) | {
    "day", "week", "month", "year", "hour", "minute", "second", "cent", "dollar", "euro", "ton", "degree",
    "radian", "unit", "square unit", "cubic unit", "percent", "point", "meter", "inch", "foot",
}  # fmt: skip
#: Words after a number that scale it, not units: ``5\text{ million}`` is 5,000,000, never 5.
MULTIPLIERS = {"hundred": "100", "thousand": "1000", "million": "10^{6}", "billion": "10^{9}",
               "trillion": "10^{12}", "dozen": "12", "tenth": "10^{-1}", "hundredth": "10^{-2}",
               "thousandth": "10^{-3}", "millionth": "10^{-6}"}  # fmt: skip
POWER_WORDS = {"squared": "2", "cubed": "3"}
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


def _singular(word: str) -> str:
    for ending in ("ches", "shes", "sses", "xes"):
        if word.endswith(ending):
            return word[:-2]
    return word[:-1] if word.endswith("s") and len(word) > 3 and not word.endswith("ss") else word


def _unit_name(raw: str) -> str:
    raw = " ".join(LATEX_SPACE.sub(" ", raw).split())
    if raw in UNIT_SYMBOLS:
        return UNIT_SYMBOLS[raw]
    if "/" in raw:
        return "/".join(_unit_name(part) for part in raw.split("/"))
    if len(raw) <= 3:  # a symbol the table lacks keeps its case: Mm is not mm
        return raw
    words = [_singular(w) for w in raw.lower().split()]
    return " ".join(UNIT_WORDS.get(w, w) for w in words)


def _found_unit(value: str) -> tuple[int, str] | None:
    """Where the unit starts in ``value`` and its name (parts joined by ``·``, each with its power), or None."""
    pos, names = len(value), []
    while True:
        token = UNIT_TOKEN.search(value, 0, pos)
        if token is None:
            break
        content = token.group("wrapped") or token.group("roman") or token.group("rm") or ""
        if not content.strip() or (
            token.group("cmd") in ("mathrm", "operatorname")
            and content.strip() not in UNIT_SYMBOLS
            and len(content.strip()) < 3
        ):
            break  # \mathrm{e}, \mathrm{i}, \mathrm{d}: constants, not units
        name = _unit_name(content)
        names.insert(0, f"{name}^{token.group('power')}" if token.group("power") else name)
        pos = UNIT_JOIN.search(value, 0, token.start()).start()
    if names and value[:pos].strip():
        return pos, "·".join(names)
    bare = BARE_UNIT.search(value)
    if bare is None:
        return None
    word, gap, power = bare.group("word"), bare.group("gap"), bare.group("power")
    if word in UNIT_SYMBOLS:
        if len(word) == 1 and not gap and re.search(r"[A-Za-z\\]", value[: bare.start()]):
            return None  # x = 5m, 2\pi r: an expression; a lone 5m or 7g is a quantity, as math-verify reads it
    elif not gap or len(word) < 3:
        return None  # 2xy, 4ac, 2abc: an expression
    name = _unit_name(word)
    return bare.start() + 1, (f"{name}^{power}" if power else name)


def unit_of(value: str) -> str | None:
    """The unit a value names (``percent``, ``degree``, ``dollar`` or the words after it, singular, with their
    powers: ``centimeter^2``), or None."""
    value = strip_trailing(value.strip())
    if PERCENT.search(value[-2:]):
        return "percent"
    if DEGREES.search(value):
        return "degree"
    found = _found_unit(value)
    if found is not None and found[1]:
        return found[1]
    if re.match(r"\s*(?:\\\$|\$(?=\s*\d))", value):  # \$5 or $5, not the $ of $\frac{1}{2}$
        return "dollar"
    return None


def _scale(words: list[str]) -> str | None:
    """The factor of words that all scale a number (``hundred thousand``), or None."""
    if words and all(w in MULTIPLIERS for w in words):
        return "\\cdot".join(MULTIPLIERS[w] for w in words)
    return None


def is_known_unit(name: str) -> bool:
    """Every part of a unit name is a unit, a scale word or a power word (``meter/second``, ``kilometer·second^-1``)."""
    parts = re.split(r"[·/]", name)
    words = [w for part in parts for w in part.split("^")[0].split()]
    return bool(words) and all(w in KNOWN_UNITS or w in MULTIPLIERS or w in POWER_WORDS for w in words)


def names_a_unit(value: str) -> bool:
    """A unit word or symbol after the number (``5\\text{ cm}``), not percent, degrees or currency."""
    return unit_of(value) not in (None, "percent", "degree", "dollar")


def unexplained_word(answer: str, truth: str) -> bool:
    """The answer adds words after its number that are neither a unit, a scale nor one plain noun (``5 apples``
    may answer 5; ``5 \\text{ is wrong}``, ``5\\text{ hundred thousand}`` of an unknown kind may not)."""
    ours = unit_of(answer)
    if ours is None or unit_of(truth) is not None or is_known_unit(ours):
        return False
    return " " in ours or "·" in ours or "/" in ours


def without_unit(value: str) -> str:
    """The value without the unit after it (``12 meters`` → ``12``: math-verify reads bare words as products of
    letters); percent, degrees and currency stay, math-verify reads them. Scale words are applied instead
    (``5\\text{ million}`` → ``5\\cdot10^{6}``, ``5 \\text{ squared}`` → ``5^{2}``)."""
    value = strip_trailing(value.strip())
    found = _found_unit(value)
    if found is None:
        return value
    start, name = found
    words = name.split("^")[0].split()
    scale = _scale(words)
    if scale is not None and "^" not in name:
        return f"{value[:start]}\\cdot{scale}"
    if len(words) == 1 and words[0] in POWER_WORDS:
        return f"{{{value[:start]}}}^{{{POWER_WORDS[words[0]]}}}"
    return value[:start]


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

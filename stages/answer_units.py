"""Units in answers: which unit a value names, whether two answers name different ones, and the value without
its unit (math-verify drops units silently, so 5 m would equal 5 cm; it also reads bare words as products of
letters, so 12 meters would not equal 12). Scale words are not units: 5 million is 5,000,000."""

from __future__ import annotations

import re

from stages.answers import DEGREES, LATEX_SPACE, PERCENT, strip_trailing

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

"""Final-answer extraction from a model's answer text, and normalised string comparison."""

from __future__ import annotations

import re
import unicodedata

ANSWER_IS = re.compile(r"(?i)(?:final answer|the answer)\s*(?:is|:)\s*:?\s*(.+?)\s*(?:\.\s*$|\.\s+|\n|$)")
CHOICE = re.compile(r"(?i)(?:answer\s*(?:is|:)?\s*|^\s*)\(?([A-E])\)?(?:[.)]|\s*$)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


class UnbalancedBoxError(ValueError):
    """``\\boxed{`` without its closing brace."""


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` (nested braces allowed); raises if its braces never close."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    raise UnbalancedBoxError("\\boxed{ is never closed")


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


TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*(?=\{)")


def normalize(value: str) -> str:
    """Case, width, spaces, punctuation, a surrounding $…$ and text commands (``\\text{(B)}``) do not count in a
    string comparison."""
    value = TEXT_COMMANDS.sub("", unicodedata.normalize("NFKC", value).strip().strip("$")).lower()
    return re.sub(r"[\s\W_]+", "", value)


def looks_like_math(value: str) -> bool:
    return bool(re.search(r"[\d\\^{}=+*/]", value))


#: Thousands separators inside a number: ``1\,000\,000``, ``1{,}000``, ``1\ 000`` (math-verify reads the LaTeX
#: spaces as products: 1*0*0).
DIGIT_SEPARATOR = re.compile(r"(?<=\d)(?:\\[,;: !]|\{,\}|~)(?=\d{3}(?!\d))")
DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
#: A unit after a number: ``5\text{ cm}``, ``5\,\mathrm{m}``, ``12 meters``.
UNIT = re.compile(
    r"\d\s*(?:\\[,;: !])?\s*"
    r"(?:\\(?:text|mbox|mathrm|textrm)\s*\{\s*([A-Za-z][A-Za-z ]*?)\s*\}|([A-Za-z]{2,}))\s*\.?\s*$"
)
UNIT_NAMES = {
    "mm": "millimeter", "cm": "centimeter", "m": "meter", "km": "kilometer", "in": "inch", "ft": "foot",
    "g": "gram", "kg": "kilogram", "s": "second", "sec": "second", "min": "minute", "h": "hour", "hr": "hour",
    "l": "liter", "ml": "milliliter", "mph": "mile per hour", "feet": "foot", "inches": "inch",
}  # fmt: skip


def without_digit_separators(value: str) -> str:
    return DIGIT_SEPARATOR.sub("", value)


def unit_of(value: str) -> str | None:
    """The unit named after a number at the end of ``value`` (singular, full name), or None."""
    found = UNIT.search(value.strip())
    if found is None:
        return None
    unit = (found.group(1) or found.group(2)).strip().lower()
    unit = UNIT_NAMES.get(unit, unit)
    return unit[:-1] if unit.endswith("s") and len(unit) > 3 and not unit.endswith("ss") else unit


def units_differ(answer: str, truth: str) -> bool:
    """Both name a unit and the units are not the same: math-verify drops units, so 5 m would equal 5 cm."""
    ours, theirs = unit_of(answer), unit_of(truth)
    return ours is not None and theirs is not None and ours != theirs


def in_radians(value: str) -> str:
    """Degrees written as radians: ``60^\\circ`` becomes ``60\\cdot\frac{\\pi}{180}``."""
    return DEGREES.sub(r"\\cdot\\frac{\\pi}{180}", value)


#: An interval closed at infinity (``[2, \infty]``): sympy reads it as open there, a grader calls it wrong.
CLOSED_AT_INFINITY = re.compile(r"\\infty\s*(?:\\right\s*)?\]|\[\s*(?:\\left\s*)?-?\s*\\infty")
PERCENT = re.compile(r"\\?%")


def closed_at_infinity(answer: str, truth: str) -> bool:
    return bool(CLOSED_AT_INFINITY.search(answer)) and not CLOSED_AT_INFINITY.search(truth)


def without_percent(value: str) -> str:
    return PERCENT.sub("", value)

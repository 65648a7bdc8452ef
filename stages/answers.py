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


def normalize(value: str) -> str:
    """Case, width, spaces, punctuation and a surrounding $…$ do not count in a string comparison."""
    value = unicodedata.normalize("NFKC", value).strip().strip("$").lower()
    return re.sub(r"[\s\W_]+", "", value)


def looks_like_math(value: str) -> bool:
    return bool(re.search(r"[\d\\^{}=+*/]", value))

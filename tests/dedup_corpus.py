"""A corpus with planted near-duplicates at controlled word-5-gram Jaccard similarity, over real text."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path


def real_paragraphs(n: int, min_words: int = 120) -> list[str]:
    """Distinct prose/code paragraphs from the Python standard library's sources (real text)."""
    out: list[str] = []
    seen: set[str] = set()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        words = path.read_text(encoding="utf-8", errors="replace").split()
        for start in range(0, len(words) - min_words, min_words * 2):
            text = " ".join(words[start : start + min_words + (start % 37)])
            if text not in seen:
                seen.add(text)
                out.append(text)
            if len(out) == n:
                return out
    return out


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y) if x or y else 1.0


def mutate(text: str, edits: int, rng: random.Random) -> str:
    """Random word substitutions, insertions and deletions, and sometimes a paragraph swap."""
    words = text.split()
    for _ in range(edits):
        op = rng.random()
        i = rng.randrange(len(words))
        if op < 0.4:
            words[i] = f"edit{rng.randrange(10**6)}"
        elif op < 0.7:
            words.insert(i, f"ins{rng.randrange(10**6)}")
        elif len(words) > 10:
            del words[i]
    if rng.random() < 0.2:
        half = len(words) // 2
        words = words[half:] + words[:half]  # shuffled paragraphs
    return " ".join(words)


def planted_pairs(n_pairs: int, seed: int = 0) -> list[tuple[str, str, float]]:
    """(original, variant, true Jaccard) with edit counts spread to cover similarities 0.2 … 1.0."""
    rng = random.Random(seed)
    originals = real_paragraphs(n_pairs)
    pairs = []
    for text in originals:
        edits = rng.choice([0, 1, 1, 2, 3, 5, 8, 12, 18, 25, 35])
        variant = mutate(text, edits, rng)
        pairs.append((text, variant, jaccard(text, variant)))
    return pairs

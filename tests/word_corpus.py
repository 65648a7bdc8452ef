"""Real text of several kinds, for the word-splitting and quality agreement tests: nothing here was written for
them. Sources are files every test machine has: the pinned packages of the venv and the Python standard library
(its ``test`` data), plus Debian's documentation when present.

- ``prose``: the Python reference manual's topics;
- ``markup``: reST and Markdown files of the installed packages (inline ``literal``, *emphasis*, :role:`x`, links);
- ``code``: standard-library Python sources;
- ``email``: the email and mailbox messages of the standard library's tests (headers, quoting, MIME, signatures);
- ``mixed``: message catalogues (``.po``) of the installed packages, in many languages and scripts.
"""

from __future__ import annotations

import glob
import random
import sysconfig
from pathlib import Path

SITE = sysconfig.get_paths()["purelib"]
STDLIB = sysconfig.get_paths()["stdlib"]
SOURCES = {
    "markup": [f"{SITE}/**/*.rst", f"{SITE}/**/*.md", "/usr/share/doc/**/*.md"],
    "code": [f"{STDLIB}/*.py"],
    "email": [f"{STDLIB}/test/test_email/data/*.txt", f"{STDLIB}/test/*.txt"],
    "mixed": [f"{SITE}/**/*.po"],
}


def _files(patterns: list[str]) -> list[str]:
    return sorted({f for pattern in patterns for f in glob.glob(pattern, recursive=True)})


def _prose() -> list[str]:
    from pydoc_data.topics import topics

    return [line for text in topics.values() for line in text.splitlines()]


def kind_lines(kind: str, n: int, seed: int = 0, min_chars: int = 20) -> list[str]:
    """``n`` lines of real text of one kind (fewer if the machine has fewer)."""
    if kind == "prose":
        lines = _prose()
    else:
        lines = []
        for path in _files(SOURCES[kind]):
            try:
                lines += Path(path).read_text(encoding="utf-8").splitlines()
            except (UnicodeDecodeError, OSError):
                continue
    lines = [line for line in lines if len(line.strip()) >= min_chars]
    random.Random(seed).shuffle(lines)
    return lines[:n]


def kind_documents(kind: str, n: int, seed: int = 0) -> list[str]:
    """``n`` documents of one kind: runs of consecutive paragraphs of its files."""
    if kind == "prose":
        texts = [text for _, text in sorted(__import__("pydoc_data.topics").topics.topics.items())]
    else:
        texts = []
        for path in _files(SOURCES[kind]):
            try:
                texts.append(Path(path).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, OSError):
                continue
    rng = random.Random(seed)
    docs = []
    for text in texts:  # runs of 3-20 paragraphs, as a page would hold them
        paragraphs = text.split("\n\n")
        start = 0
        while start < len(paragraphs):
            size = rng.randint(3, 20)
            doc = "\n\n".join(paragraphs[start : start + size]).strip()
            if doc:
                docs.append(doc)
            start += size
    rng.shuffle(docs)
    return docs[:n]


KINDS = ("prose", "markup", "code", "email", "mixed")

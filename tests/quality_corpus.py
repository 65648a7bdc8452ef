"""Real prose for the quality-filter agreement test: package READMEs, licences and metadata descriptions found
in the environment (pinned by the lock files), and the Python reference manual's topics."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path
from pydoc_data.topics import topics


def prose_documents(n: int, seed: int = 0) -> list[str]:
    roots = [Path(sysconfig.get_paths()["purelib"])]
    files = sorted(
        p
        for root in roots
        for p in root.rglob("*")
        if p.is_file() and (p.suffix in {".md", ".rst", ".txt"} or p.name in {"METADATA", "LICENSE", "README"})
    )
    docs: list[str] = [t for _, t in sorted(topics.items())]
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        # Cut long files into documents of a few paragraphs, as a web page would be.
        paragraphs = text.split("\n\n")
        for start in range(0, len(paragraphs), 12):
            piece = "\n\n".join(paragraphs[start : start + 12]).strip()
            if piece:
                docs.append(piece)
    rng = random.Random(seed)
    rng.shuffle(docs)
    return docs[:n]

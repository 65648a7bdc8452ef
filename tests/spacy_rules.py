"""The English tokenizer rules of the installed spaCy, exported for ``stages/spacy_words.py``.

    .venv/bin/python -m tests.spacy_rules > stages/data/spacy_en_tokenizer.json

``tests/test_quality.py`` checks that the committed file equals this export (spaCy is pinned in
requirements-test.lock), so the rules Refinery applies are spaCy's, not a hand-written imitation.
"""

from __future__ import annotations

import json
import sys


def export() -> dict:
    import spacy
    from spacy.symbols import ORTH

    tokenizer = spacy.blank("en").tokenizer
    patterns = {
        name: {"pattern": regex.__self__.pattern, "flags": int(regex.__self__.flags)}
        for name, regex in (("prefix", tokenizer.prefix_search), ("suffix", tokenizer.suffix_search),
                            ("infix", tokenizer.infix_finditer), ("url", tokenizer.url_match))
    }  # fmt: skip
    return {
        "spacy": spacy.__version__,
        **patterns,
        "specials": {key: [token[ORTH] for token in value] for key, value in sorted(tokenizer.rules.items())},
    }


if __name__ == "__main__":
    json.dump(export(), sys.stdout, ensure_ascii=False, indent=0, sort_keys=True)
    sys.stdout.write("\n")

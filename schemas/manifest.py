"""Records a job writes beside its shards: per-partition reports, the funnel and the shard manifest."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field


class ShardEntry(BaseModel):
    """One committed shard; ``files`` maps a file name (relative to ``OUT/shards/``) to its digest
    (``Manifest.file_digest``)."""

    shard: str
    partition: int
    sequences: int
    tokens: int
    padding: int
    documents: int
    files: dict[str, str]


class DocumentShardEntry(BaseModel):
    """One committed document-layout shard (``megatron`` or ``datatrove``); ``prefix`` and ``files`` are relative
    to the output directory (``megatron/part-00000`` → ``.bin``/``.idx``)."""

    format: str
    prefix: str
    #: The mix bucket whose documents the shard holds when the mix is left to the trainer's blend.
    bucket: str | None = None
    partition: int
    documents: int
    #: Tokens written, BOS/EOS included.
    tokens: int
    files: dict[str, str]


class PartitionReport(BaseModel):
    """What one partition did; written as its completion marker, so a resumed job can skip it."""

    partition: int
    sources: list[str]
    input: int
    kept: int
    dropped: dict[str, int] = Field(default_factory=dict)
    quarantined: dict[str, int] = Field(default_factory=dict)
    tokens: int = 0
    shards: list[ShardEntry] = Field(default_factory=list)
    documents: list[DocumentShardEntry] = Field(default_factory=list)
    #: Tokens each mix bucket contributes after up/down-sampling (copies counted), when a mix stage ran.
    mix_tokens: dict[str, int] = Field(default_factory=dict)


class Funnel(BaseModel):
    """Where every input record went. ``input == kept + sum(dropped) + sum(quarantined)`` always holds."""

    input: int
    kept: int
    dropped: dict[str, int]
    quarantined: dict[str, int]
    tokens: int
    sequences: int
    padding: int
    partitions: int

    @property
    def balanced(self) -> bool:
        return self.input == self.kept + sum(self.dropped.values()) + sum(self.quarantined.values())

    @classmethod
    def from_reports(cls, reports: list[PartitionReport]) -> Funnel:
        dropped: Counter[str] = Counter()
        quarantined: Counter[str] = Counter()
        for report in reports:
            dropped.update(report.dropped)
            quarantined.update(report.quarantined)
        shards = [s for r in reports for s in r.shards]
        return cls(
            input=sum(r.input for r in reports),
            kept=sum(r.kept for r in reports),
            dropped=dict(sorted(dropped.items())),
            quarantined=dict(sorted(quarantined.items())),
            tokens=sum(r.tokens for r in reports),
            sequences=sum(s.sequences for s in shards),
            padding=sum(s.padding for s in shards),
            partitions=len(reports),
        )


class MixShare(BaseModel):
    tokens: int
    share: float


def mix_shares(reports: list[PartitionReport]) -> dict[str, MixShare]:
    """Each bucket's tokens after physical up/down-sampling (copies counted) and its share of them
    (a trainer-side blend's shares come from ``pipeline.training.blend_shares``)."""
    totals: Counter[str] = Counter()
    for report in reports:
        totals.update(report.mix_tokens)
    grand = sum(totals.values()) or 1
    return {bucket: MixShare(tokens=t, share=round(t / grand, 6)) for bucket, t in sorted(totals.items())}


class TokenizerIdentity(BaseModel):
    """Which tokenizer made the ids, so a trainer can check it loads the same one."""

    name: str
    sha256: str
    #: Ids including the added special tokens (DeepSeek-V3/R1: 128,815).
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int


class BlendEntry(BaseModel):
    """One Megatron prefix of a trainer-side blend, with its normalised sampling weight."""

    weight: float
    prefix: str
    bucket: str


class Manifest(BaseModel):
    """``OUT/manifest.json``: what a trainer needs to find and check every shard."""

    name: str
    fingerprint: str
    seq_len: int | None
    pack_mode: str | None
    token_dtype: str = "int32"
    #: What the digests in ``files`` are: XXH3-128 in hex, as ``xxh128sum`` prints it (``storage.fs.file_digest``).
    file_digest: str = "xxh3-128"
    shard_formats: list[str]
    shards: list[ShardEntry]
    funnel: Funnel
    #: Effective token share of each mix bucket (empty without a mix stage).
    mix: dict[str, MixShare] = Field(default_factory=dict)
    #: Document-layout shards (megatron, datatrove); ``shards`` are the packed ones.
    documents: list[DocumentShardEntry] = Field(default_factory=list)
    #: Tokens written per format (BOS/EOS included, padding not).
    tokens: dict[str, int] = Field(default_factory=dict)
    tokenizer: TokenizerIdentity | None = None
    #: The Megatron blend of a ``mix`` with ``apply: blend`` (also in ``megatron/data-args.txt``).
    blend: list[BlendEntry] = Field(default_factory=list)
    #: Ready-to-paste ways to train on the output, per trainer.
    usage: dict[str, str] = Field(default_factory=dict)

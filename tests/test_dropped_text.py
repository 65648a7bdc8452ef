"""The text of dropped documents in OUT/dropped/: every reason, the kept copy of a duplicate, the job-wide sample
by id hash, and the SQL view."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import xxhash

from pipeline.cli import main
from pipeline.runner import run_workflow
from schemas.spec import parse_spec
from storage.catalog import connect, run_sql

from .dedup_corpus import real_paragraphs

STAGES = [
    {
        "stage": "quality",
        "c4": {"enabled": False},
        "fineweb": {"enabled": False},
        "gopher_repetition": {"enabled": False},
        "gopher_quality": {
            "min_doc_words": 50,
            "max_symbol_word_ratio": None,
            "max_non_alpha_words_ratio": None,
            "min_stop_words": None,
            "min_avg_word_length": None,
            "max_avg_word_length": None,
        },
    },
    {"stage": "exact_dedup"},
    {"stage": "minhash_dedup"},
    {"stage": "tokenize"},
    {"stage": "pack", "seq_len": 512},
]


def _corpus(root: Path) -> tuple[Path, dict[str, str]]:
    """Real paragraphs, short ones (quality drops them), exact copies and near copies, over four files."""
    rng = random.Random(4)
    texts = {}
    paragraphs = real_paragraphs(120)
    for k, text in enumerate(paragraphs):
        texts[f"p{k}"] = text
        if k % 5 == 0:
            texts[f"copy{k}"] = text
        if k % 7 == 0:
            words = text.split()
            words[len(words) // 2] = "changed"
            texts[f"near{k}"] = " ".join(words)
        if k % 3 == 0:
            texts[f"short{k}"] = " ".join(text.split()[: rng.randint(5, 30)])
    root.mkdir()
    ids = list(texts)
    for f in range(4):
        lines = [json.dumps({"id": i, "text": texts[i]}) for i in ids[f::4]]
        (root / f"part-{f}.jsonl").write_text("\n".join(lines) + "\n")
    return root, texts


def _spec(corpus: Path, out: Path, mode: str, cap: int = 1000) -> object:
    return parse_spec({"input": {"url": str(corpus), "partition_bytes": 16384},
                       "output": {"url": str(out), "dropped_text": mode, "dropped_sample": cap},
                       "stages": STAGES})  # fmt: skip


def test_every_dropped_document_keeps_its_text_and_reason(tmp_path: Path) -> None:
    corpus, texts = _corpus(tmp_path / "in")
    result = run_workflow(_spec(corpus, tmp_path / "all", "all"), workers=1, show_progress=False)
    funnel = result.manifest.funnel
    assert funnel.balanced and funnel.partitions > 2
    dropped = pq.read_table(tmp_path / "all" / "dropped").to_pylist()
    assert len(dropped) == sum(funnel.dropped.values())
    assert Counter(r["reason"] for r in dropped) == Counter(funnel.dropped)
    docs = {r["id"]: r for r in pq.read_table(tmp_path / "all" / "docs").to_pylist()}
    for row in dropped:
        assert row["text"] == texts[row["id"]]
        assert docs[row["id"]]["status"] == row["reason"] and docs[row["id"]]["line"] == row["line"]
        if row["reason"] in ("exact_duplicate", "near_duplicate"):
            assert row["kept_id"] and docs[row["kept_id"]]["status"] == "kept", row
        else:
            assert row["kept_id"] is None
    assert {r["reason"] for r in dropped} >= {"exact_duplicate", "near_duplicate"}
    assert any(r["stage"] == "quality" for r in dropped)
    conn = connect({"job": str(tmp_path / "all")}, prefix=False)
    rows = run_sql(conn, "SELECT reason, count(*) FROM dropped GROUP BY 1 ORDER BY 1").rows
    assert dict(rows) == dict(funnel.dropped)
    assert main(["sql", str(tmp_path / "all"), "SELECT id, kept_id FROM dropped WHERE kept_id IS NOT NULL"]) == 0


def test_the_sample_is_the_lowest_id_hashes_of_each_reason_across_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.dropped

    corpus, _ = _corpus(tmp_path / "in")
    cap = 4
    run_workflow(_spec(corpus, tmp_path / "all", "all"), workers=1, show_progress=False)
    result = run_workflow(_spec(corpus, tmp_path / "sample", "sample", cap), workers=2, show_progress=False)
    everything = pq.read_table(tmp_path / "all" / "dropped").to_pylist()
    sample = pq.read_table(tmp_path / "sample" / "dropped").to_pylist()
    expected = set()
    for reason in {r["reason"] for r in everything}:
        ids = sorted((xxhash.xxh3_64_intdigest(r["id"].encode()), r["id"]) for r in everything if r["reason"] == reason)
        expected |= {(reason, i) for _, i in ids[:cap]}
    assert {(r["reason"], r["id"]) for r in sample} == expected
    assert max(Counter(r["reason"] for r in sample).values()) == cap
    # A job of more than ONE_TASK_SPLITS splits merges in a tree of tasks, then cuts each file in its own: the same
    with monkeypatch.context() as patch:  # sample as the one task of this small job
        patch.setattr(pipeline.dropped, "ONE_TASK_SPLITS", 0)
        run_workflow(_spec(corpus, tmp_path / "tree", "sample", cap), workers=2, show_progress=False)
    tree = pq.read_table(tmp_path / "tree" / "dropped").to_pylist()
    assert sorted(tree, key=lambda r: r["id"]) == sorted(sample, key=lambda r: r["id"])
    # A cap no reason reaches: nothing is cut (no merge tasks run) and the sample is every dropped document.
    roomy = max(Counter(r["reason"] for r in everything).values())
    run_workflow(_spec(corpus, tmp_path / "roomy", "sample", roomy), workers=2, show_progress=False)
    assert sorted(r["id"] for r in pq.read_table(tmp_path / "roomy" / "dropped").to_pylist()) == sorted(
        r["id"] for r in everything
    )
    assert (
        result.manifest.funnel.dropped
        == run_workflow(
            _spec(corpus, tmp_path / "none", "none"), workers=1, show_progress=False
        ).manifest.funnel.dropped
    ), "keeping the text changes no verdict"
    assert not (tmp_path / "none" / "dropped").exists()

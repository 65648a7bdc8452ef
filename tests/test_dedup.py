"""Global dedup: exact and near-duplicate decisions, the audit table, accuracy against datasketch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.runner import run_workflow
from schemas.spec import SpecError, parse_spec
from schemas.stages import ExactDedupConfig, MinHashDedupConfig, Normalization
from stages.dedup import bucket_edges, clusters, exact_edges, exact_keys
from stages.minhash import estimate_jaccard, signatures

from .dedup_corpus import planted_pairs, real_paragraphs


def dedup_spec(input_url: str, output_url: str, **minhash: object) -> object:
    return parse_spec(
        {
            "input": {"url": input_url},
            "output": {"url": output_url},
            "stages": [{"stage": "exact_dedup"}, {"stage": "minhash_dedup", **minhash}],
        }
    )


def test_normalisation_decides_what_is_exact() -> None:
    table = pa.table({"text": ["Hello   World", "hello world", "Hello, world!", "ｈｅｌｌｏ world"]})
    high, low = exact_keys(table, ExactDedupConfig())
    keys = list(zip(high.tolist(), low.tolist(), strict=True))
    assert keys[0] == keys[1] == keys[3] != keys[2], "case, whitespace and NFKC width fold; punctuation stays"
    strict = ExactDedupConfig(normalization=Normalization(punctuation=True))
    high, low = exact_keys(table, strict)
    assert len(set(zip(high.tolist(), low.tolist(), strict=True))) == 1


def test_edges_and_clusters_pick_the_earliest_document() -> None:
    exact = exact_edges(pd.DataFrame({"high": np.array([5, 5, 7, 5], np.uint64), "low": np.array([1, 1, 2, 1],
                                      np.uint64), "order": [30, 10, 20, 40]}))  # fmt: skip
    assert sorted(zip(exact["a"], exact["b"], strict=True)) == [(10, 30), (10, 40)]
    near = bucket_edges(pd.DataFrame({"bucket": np.array([1, 1, 2, 2, 3], np.uint64), "order": [40, 50, 50, 60, 9]}))
    assert sorted(zip(near["a"], near["b"], strict=True)) == [(40, 50), (50, 60)]
    result = clusters(pd.concat([exact, near])).set_index("order")
    assert set(result["cluster"]) == {10}, "one component through the shared document 40"
    assert pd.isna(result.loc[10, "reason"]), "the earliest document is kept"
    assert result.loc[30, "reason"] == result.loc[40, "reason"] == "exact_duplicate"
    assert result.loc[50, "reason"] == result.loc[60, "reason"] == "near_duplicate"


def test_short_and_empty_documents_have_no_signature() -> None:
    sig = signatures(pa.array(["too short", "", "one two three four five"]), MinHashDedupConfig())
    assert (sig[0] == 0xFFFFFFFF).all() and (sig[1] == 0xFFFFFFFF).all()
    assert not (sig[2] == 0xFFFFFFFF).all()


def test_spec_rules_for_dedup_stages() -> None:
    base = {"input": {"url": "x"}, "output": {"url": "y"}}
    with pytest.raises(SpecError, match="must come before 'tokenize'"):
        parse_spec({**base, "stages": [{"stage": "tokenize"}, {"stage": "exact_dedup"}]})
    with pytest.raises(SpecError, match="may appear only once"):
        parse_spec({**base, "stages": [{"stage": "exact_dedup"}, {"stage": "exact_dedup"}]})
    with pytest.raises(SpecError, match=r"stages\[0\].bands: must be > 0"):
        parse_spec({**base, "stages": [{"stage": "minhash_dedup", "bands": 0}]})


def _write_jsonl(path: Path, texts: list[str], prefix: str) -> None:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "text": t}) + "\n" for i, t in enumerate(texts)))


@pytest.fixture(scope="module")
def dedup_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three files: originals, then exact copies (case/space changed) and light edits of some of them."""
    root = tmp_path_factory.mktemp("dedup")
    (root / "in").mkdir()
    originals = real_paragraphs(60)
    _write_jsonl(root / "in" / "a.jsonl", originals, "orig-")
    copies = ["  " + t.upper() + "  " for t in originals[:10]]
    _write_jsonl(root / "in" / "b.jsonl", copies, "copy-")
    edited = [t.replace(" ", "  ", 3).split(" ", 1)[1] + " appended words here" for t in originals[10:20]]
    _write_jsonl(root / "in" / "c.jsonl", [*edited, "short text", "tiny"], "edit-")
    run_workflow(dedup_spec(str(root / "in"), str(root / "out")), workers=2, show_progress=False)
    return root / "out"


def test_job_drops_copies_and_explains_every_drop(dedup_job: Path) -> None:
    funnel = json.loads((dedup_job / "stats" / "funnel.json").read_text())
    assert funnel["dropped"] == {"exact_duplicate": 10, "near_duplicate": 10}
    assert funnel["input"] == funnel["kept"] + 20 and funnel["kept"] == 62
    docs = pq.read_table(dedup_job / "docs").to_pandas()
    table = pq.read_table(dedup_job / "dedup" / "clusters.parquet").to_pandas()
    dropped = docs[docs["status"] != "kept"]
    assert set(dropped["id"]) <= set(table["id"]), "every drop has a row in the cluster table"
    kept = table[table["kept"]].set_index("cluster")["id"]
    for _, row in table[~table["kept"]].iterrows():
        assert kept[row["cluster"]].startswith("orig-"), "the earliest copy, in source order, is kept"
        assert row["similarity"] >= 0.8
    exact = table[table["status"] == "exact_duplicate"]
    assert set(exact["id"]) == {f"copy-{i}" for i in range(10)} and (exact["similarity"] == 1.0).all()


def test_cluster_table_answers_sql(dedup_job: Path) -> None:
    import duckdb

    path = dedup_job / "dedup" / "clusters.parquet"
    rows = duckdb.sql(
        f"SELECT d.id, k.id AS kept_id, d.status, d.similarity FROM '{path}' d "
        f"JOIN '{path}' k ON d.cluster = k.cluster AND k.kept WHERE NOT d.kept ORDER BY d.id"
    ).fetchall()
    assert len(rows) == 20
    assert ("copy-0", "orig-0", "exact_duplicate", 1.0) in rows


def _lsh_decisions(pairs: list[tuple[str, str, float]], tmp_path: Path) -> list[bool]:
    """Refinery's verdict for each planted pair: was the variant dropped as a duplicate of its original?"""
    (tmp_path / "in").mkdir()
    _write_jsonl(tmp_path / "in" / "0-originals.jsonl", [p[0] for p in pairs], "o")
    _write_jsonl(tmp_path / "in" / "1-variants.jsonl", [p[1] for p in pairs], "v")
    spec = parse_spec({"input": {"url": str(tmp_path / "in")}, "output": {"url": str(tmp_path / "out")},
                       "stages": [{"stage": "minhash_dedup"}]})  # fmt: skip
    run_workflow(spec, workers=2, show_progress=False)
    docs = pq.read_table(tmp_path / "out" / "docs").to_pandas().set_index("id")
    return [docs.loc[f"v{i}", "status"] == "near_duplicate" for i in range(len(pairs))]


def _datasketch_decisions(pairs: list[tuple[str, str, float]]) -> list[bool]:
    from datasketch import MinHash, MinHashLSH

    def minhash(text: str) -> MinHash:
        words = text.lower().split()
        m = MinHash(num_perm=112, seed=1)
        m.update_batch([" ".join(words[i : i + 5]).encode() for i in range(len(words) - 4)])
        return m

    lsh = MinHashLSH(threshold=0.8, num_perm=112)
    for i, (original, _, _) in enumerate(pairs):
        lsh.insert(f"o{i}", minhash(original))
    return [f"o{i}" in lsh.query(minhash(variant)) for i, (_, variant, _) in enumerate(pairs)]


def test_accuracy_on_planted_near_duplicates(tmp_path: Path) -> None:
    pairs = planted_pairs(600)
    ours = _lsh_decisions(pairs, tmp_path)
    theirs = _datasketch_decisions(pairs)
    similar = [i for i, p in enumerate(pairs) if p[2] >= 0.9]
    different = [i for i, p in enumerate(pairs) if p[2] <= 0.5]
    assert len(similar) >= 100 and len(different) >= 100, "the corpus covers both regimes"
    for name, found in (("refinery", ours), ("datasketch", theirs)):
        recall = sum(found[i] for i in similar) / len(similar)
        false_positive = sum(found[i] for i in different) / len(different)
        print(f"{name:>10}: recall {recall:.3f} (J >= 0.9, n={len(similar)}), "
              f"false positives {false_positive:.3f} (J <= 0.5, n={len(different)})")  # fmt: skip
    assert sum(ours[i] for i in similar) / len(similar) >= 0.95
    assert sum(ours[i] for i in different) / len(different) <= 0.01


def test_signature_estimates_track_true_jaccard() -> None:
    pairs = planted_pairs(200, seed=3)
    config = MinHashDedupConfig(normalization=Normalization(punctuation=False))
    a = signatures(pa.array([p[0] for p in pairs]), config)
    b = signatures(pa.array([p[1] for p in pairs]), config)
    error = np.abs(estimate_jaccard(a, b) - np.array([p[2] for p in pairs]))
    assert error.mean() < 0.05


def test_bad_input_rules(tmp_path: Path) -> None:
    """Whitespace-only text is quarantined at ingest; texts shorter than one shingle are kept unless an
    exact copy came first; a 50 MB document and its copy are handled without a crash."""
    (tmp_path / "in").mkdir()
    huge = " ".join(f"word{i % 99991}x{i % 7}" for i in range(5_000_000))
    assert len(huge) >= 50_000_000
    texts = ["   \n\t ", "tiny text", "tiny text", "Tiny  TEXT", huge, huge]
    _write_jsonl(tmp_path / "in" / "bad.jsonl", texts, "t")
    result = run_workflow(dedup_spec(str(tmp_path / "in"), str(tmp_path / "out")), workers=1, show_progress=False)
    funnel = result.manifest.funnel
    assert funnel.balanced
    assert funnel.quarantined == {"empty_text": 1}
    assert funnel.dropped == {"exact_duplicate": 3} and funnel.kept == 2
    docs = pq.read_table(tmp_path / "out" / "docs").to_pandas().set_index("id")
    assert docs.loc["t5", "status"] == "exact_duplicate" and docs.loc["t4", "status"] == "kept"


def test_incremental_dedup_against_an_earlier_index(tmp_path: Path) -> None:
    """Job 2 deduplicates a new crawl against job 1's index; job 3 against job 2's (old + new)."""
    originals = real_paragraphs(90)
    for name in ("crawl1", "crawl2", "crawl3"):
        (tmp_path / name).mkdir()
    _write_jsonl(tmp_path / "crawl1" / "a.jsonl", originals[:40], "one-")
    # crawl 2: light edits of crawl 1's documents, and new documents
    edited = [t.split(" ", 2)[2] + " plus a few new words" for t in originals[:20]]
    _write_jsonl(tmp_path / "crawl2" / "a.jsonl", edited + originals[40:70], "two-")
    # crawl 3: copies of crawl 2's new documents and of crawl 1's, and new ones
    _write_jsonl(tmp_path / "crawl3" / "a.jsonl", originals[40:50] + originals[:5] + originals[70:90], "three-")

    run_workflow(dedup_spec(str(tmp_path / "crawl1"), str(tmp_path / "out1")), workers=1, show_progress=False)
    index1 = tmp_path / "out1" / "dedup" / "index"
    assert json.loads((index1 / "_INDEX.json").read_text())["documents"] == 40

    second = dedup_spec(str(tmp_path / "crawl2"), str(tmp_path / "out2"), index=str(index1))
    funnel = run_workflow(second, workers=1, show_progress=False).manifest.funnel
    assert funnel.dropped == {"near_duplicate": 20} and funnel.kept == 30
    index2 = tmp_path / "out2" / "dedup" / "index"
    assert json.loads((index2 / "_INDEX.json").read_text())["documents"] == 70

    third = dedup_spec(str(tmp_path / "crawl3"), str(tmp_path / "out3"), index=str(index2))
    funnel = run_workflow(third, workers=1, show_progress=False).manifest.funnel
    assert funnel.dropped == {"exact_duplicate": 15} and funnel.kept == 20
    table = pq.read_table(tmp_path / "out3" / "dedup" / "clusters.parquet").to_pandas()
    assert (table.loc[~table["kept"], "cluster"] < 0).all(), "the kept copies live in the index"


def test_index_with_other_settings_is_refused(tmp_path: Path) -> None:
    from storage.dedup_index import DedupIndexError

    (tmp_path / "in").mkdir()
    _write_jsonl(tmp_path / "in" / "a.jsonl", real_paragraphs(5), "d")
    run_workflow(dedup_spec(str(tmp_path / "in"), str(tmp_path / "out1")), workers=1, show_progress=False)
    index = str(tmp_path / "out1" / "dedup" / "index")
    with pytest.raises(DedupIndexError, match="built with MinHash settings"):
        run_workflow(dedup_spec(str(tmp_path / "in"), str(tmp_path / "o2"), index=index, bands=7, rows=16),
                     workers=1, show_progress=False)  # fmt: skip
    with pytest.raises(DedupIndexError, match="incomplete"):
        run_workflow(dedup_spec(str(tmp_path / "in"), str(tmp_path / "o3"), index=str(tmp_path)), workers=1,
                     show_progress=False)  # fmt: skip


def test_a_signature_does_not_depend_on_the_batch_it_is_computed_in() -> None:
    """Texts ending in whitespace once got another signature alone than beside other texts (an Arrow split quirk)."""
    import numpy as np
    import pyarrow as pa

    from schemas.stages import MinHashDedupConfig
    from stages.minhash import signatures

    texts = [f"{p} trailing words   " if i % 2 else f"  {p}\n\n" for i, p in enumerate(real_paragraphs(40))]
    config = MinHashDedupConfig()
    alone = np.stack([signatures(pa.array([t]), config)[0] for t in texts])
    assert np.array_equal(signatures(pa.array(texts), config), alone)
    for i in range(len(texts) - 1):
        assert np.array_equal(signatures(pa.array(texts[i : i + 2]), config), alone[i : i + 2]), i


def test_a_step_that_no_document_reaches_commits_an_empty_job(tmp_path: Path) -> None:
    """Quality drops every document before minhash_dedup: the step has no keys, and the job still commits with
    a balanced funnel (it crashed building an empty Dask frame)."""
    (tmp_path / "in").mkdir()
    _write_jsonl(tmp_path / "in" / "a.jsonl", ["x y"] * 5, "s")
    spec = parse_spec({"input": {"url": str(tmp_path / "in")}, "output": {"url": str(tmp_path / "out")},
                       "stages": [{"stage": "quality"}, {"stage": "minhash_dedup"}]})  # fmt: skip
    funnel = run_workflow(spec, workers=1, show_progress=False).manifest.funnel
    assert funnel.balanced and funnel.kept == 0 and funnel.input == 5
    assert json.loads((tmp_path / "out" / "dedup" / "graph.json").read_text())["verified_edges"] == 0


def test_an_index_without_exact_hashes_serves_a_job_with_exact_dedup(tmp_path: Path) -> None:
    """An index left by a MinHash-only job holds no exact hashes; a later exact + MinHash job uses it for
    near duplicates (it failed on the missing exact keys)."""
    originals = real_paragraphs(20)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_jsonl(tmp_path / "a" / "a.jsonl", originals, "a")
    _write_jsonl(tmp_path / "b" / "b.jsonl", [t + " and one more" for t in originals[:5]] + ["new text " * 20], "b")
    first = parse_spec({"input": {"url": str(tmp_path / "a")}, "output": {"url": str(tmp_path / "out1")},
                        "stages": [{"stage": "minhash_dedup"}]})  # fmt: skip
    run_workflow(first, workers=1, show_progress=False)
    second = dedup_spec(str(tmp_path / "b"), str(tmp_path / "out2"), index=str(tmp_path / "out1" / "dedup" / "index"))
    funnel = run_workflow(second, workers=1, show_progress=False).manifest.funnel
    assert funnel.balanced and funnel.dropped == {"near_duplicate": 5} and funnel.kept == 1

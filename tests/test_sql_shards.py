"""SQL over the packed token shards (the ``shards`` view, ``decode_tokens``), the README's audit queries, and a
dataset's docs at 10M rows."""

from __future__ import annotations

import gzip
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers

from pipeline.cli import main
from pipeline.runner import run_workflow
from stages.tokenize import tokenizer_path
from storage.catalog import SqlRefused, connect, run_sql

from .conftest import make_spec, write_jsonl_corpus

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_audit_queries() -> dict[str, str]:
    """The README's shard audit queries, by their comment line (``-- name``): the test runs the text users read."""
    section = README.read_text().split("<!-- shard-audit-queries -->")[1].split("<!-- /shard-audit-queries -->")[0]
    queries = {}
    for block in re.findall(r"```sql\n(.*?)```", section, re.S):
        name, _, body = block.partition("\n")
        queries[name.removeprefix("-- ").strip()] = body.strip()
    return queries


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, str]]:
    """A packed job (best fit, 256-token sequences: some documents longer than one) with Parquet shards, and the
    text of every input document."""
    root = tmp_path_factory.mktemp("packed")
    corpus = write_jsonl_corpus(root / "corpus", files=3, docs_per_file=40, seed=3)
    out = root / "out"
    spec = make_spec(str(corpus), str(out), output={"url": str(out), "shard_sequences": 16,
                                                    "shard_formats": ["parquet", "megatron_packed"]})  # fmt: skip
    run_workflow(spec, workers=1, show_progress=False)
    texts = {}
    for path in corpus.iterdir():
        for line in gzip.decompress(path.read_bytes()).splitlines():
            record = json.loads(line)
            texts[record["id"]] = record["text"]
    return out, json.loads((out / "manifest.json").read_text()), texts


def _rows(out: Path, sql: str) -> list[list]:
    return run_sql(connect({"job": str(out)}, prefix=False), sql, limit=100_000).rows


def test_readme_audit_queries_answer_what_the_shards_and_manifest_hold(packed, capsys) -> None:
    out, manifest, texts = packed
    queries = readme_audit_queries()
    assert len(queries) == 5, sorted(queries)
    table = pq.read_table(sorted((out / "shards").glob("*.parquet")))
    sequences = table.to_pylist()

    # padding per shard: the manifest's figures, shard by shard
    rows = _rows(out, queries["padding per shard"])
    assert [r[0] for r in rows] == [s["shard"] for s in sorted(manifest["shards"], key=lambda s: s["shard"])]
    expected_rows = {s["shard"]: (s["sequences"], s["padding"]) for s in manifest["shards"]}
    assert {r[0]: (r[1], r[2]) for r in rows} == expected_rows
    assert sum(r[1] for r in rows) == manifest["funnel"]["sequences"]
    assert sum(r[2] for r in rows) == manifest["funnel"]["padding"]

    # documents per sequence
    rows = _rows(out, queries["documents per sequence"])
    assert {r[0]: r[1] for r in rows} == Counter(len(s["doc_ids"]) for s in sequences)

    # the share of sequences holding a piece of a document split across sequences
    pieces = Counter(d for s in sequences for d in set(s["doc_ids"]))
    split = {d for d, n in pieces.items() if n > 1}
    assert split, "the corpus has documents longer than a sequence"
    expected = sum(any(d in split for d in s["doc_ids"]) for s in sequences) / len(sequences)
    [[share]] = _rows(out, queries["sequences that split a document"])
    assert share == pytest.approx(expected)

    # token-id histogram: every token counted, the most frequent first
    rows = _rows(out, queries["token-id histogram"])
    counts = Counter(i for s in sequences for i in s["input_ids"])
    assert rows == [[i, n] for i, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]]
    assert sum(counts.values()) == manifest["funnel"]["sequences"] * manifest["seq_len"], "every slot, padding too"

    # decoded text beside the ids: a document packed whole in one sequence decodes to its input text
    rows = _rows(out, queries["a sequence's documents decoded"])
    tok = tokenizers.Tokenizer.from_file(tokenizer_path("deepseek-v3"))
    whole = 0
    for shard, sequence, doc_id, ids, text in rows:
        assert text == tok.decode(ids, skip_special_tokens=False)
        if doc_id not in split:
            whole += 1
            assert text.removesuffix("<｜end▁of▁sentence｜>") == texts[doc_id], (shard, sequence, doc_id)
    assert whole > 0

    # the CLI prints the same answers
    assert main(["sql", str(out), queries["padding per shard"]]) == 0
    printed = capsys.readouterr().out
    assert all(s["shard"] in printed for s in manifest["shards"])


def test_decode_tokens_names_a_bad_id_and_keeps_null(packed, monkeypatch) -> None:
    import storage.catalog

    out = packed[0]
    conn = connect({"job": str(out)}, prefix=False)
    assert run_sql(conn, "SELECT decode_tokens(NULL::INTEGER[]), decode_tokens([])").rows == [[None, ""]]
    for bad in ("-1", "128815", "NULL"):
        with pytest.raises(SqlRefused, match=f"decode_tokens: {bad.replace('NULL', 'None')} is not a token id"):
            run_sql(conn, f"SELECT decode_tokens([1, {bad}])")
    monkeypatch.setattr(storage.catalog, "MAX_DECODE_IDS", 1000)  # 16M in the service
    assert run_sql(conn, "SELECT decode_tokens(range(1000)::INTEGER[]) IS NOT NULL").rows == [[True]]
    with pytest.raises(SqlRefused, match="decode_tokens: 1,001 ids in one batch of rows; at most 1,000"):
        run_sql(conn, "SELECT decode_tokens(range(1001)::INTEGER[])")


def test_group_by_status_over_ten_million_docs_rows(tmp_path: Path) -> None:
    """The docs of a 10M-document dataset, as a job writes them (one file per partition, zstd): DuckDB reads the
    status column only."""
    docs = tmp_path / "big" / "docs"
    docs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    statuses = pa.array(["kept", "dropped", "duplicate"])
    for part in range(10):
        n = 1_000_000
        table = pa.table({
            "id": pa.array(np.char.add("doc-", np.arange(part * n, (part + 1) * n).astype(str))),
            "status": statuses.take(pa.array(rng.choice(3, n, p=[0.7, 0.2, 0.1]))),
            "n_tokens": pa.array(rng.integers(10, 5000, n)),
            "source": pa.array(np.full(n, f"s3://corpus/raw/file-{part:05d}.jsonl.zst")),
        })  # fmt: skip
        pq.write_table(table, docs / f"part-{part:05d}.parquet", compression="zstd")
    conn = connect({"job": str(tmp_path / "big")}, prefix=False)
    start = time.perf_counter()
    rows = run_sql(conn, "SELECT status, count(*) AS n FROM docs GROUP BY status ORDER BY status").rows
    seconds = time.perf_counter() - start
    assert sum(n for _, n in rows) == 10_000_000 and [s for s, _ in rows] == ["dropped", "duplicate", "kept"]
    assert seconds <= 2.0, f"GROUP BY status over 10M rows took {seconds:.2f} s"


def test_sql_cli_prints_cells_as_written_and_names_a_missing_output(packed, capsys, tmp_path: Path) -> None:
    out = packed[0]
    assert main(["sql", str(out), "SELECT '[section] a[i] [bold]x[/bold]' AS \"[t]\""]) == 0
    printed = capsys.readouterr().out
    assert "[section] a[i] [bold]x[/bold]" in printed and "[t]" in printed
    assert main(["sql", str(out), "SELECT shard, padding FROM manifest ORDER BY shard", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "shard,padding" and len(lines) == 1 + len(packed[1]["shards"])
    assert main(["sql", str(out), "SELECT shard, padding FROM manifest ORDER BY shard", "--format", "json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert set(first) == {"shard", "padding"}
    assert main(["sql", str(tmp_path / "nothing"), "SELECT count(*) FROM docs"]) == 2
    assert "no job output at" in capsys.readouterr().err


def test_file_names_with_glob_characters_are_left_out_not_read_as_patterns(tmp_path: Path) -> None:
    docs = tmp_path / "out" / "docs"
    docs.mkdir(parents=True)
    for name in ("a", "[ab]", "*", "x'); SELECT 1; --"):
        pq.write_table(pa.table({"id": [name], "status": ["kept"]}), docs / f"{name}.parquet")
    rows = run_sql(connect({"job": str(tmp_path / "out")}, prefix=False), "SELECT id FROM docs ORDER BY id").rows
    assert rows == [["a"], ["x'); SELECT 1; --"]], "each file read once, as itself"

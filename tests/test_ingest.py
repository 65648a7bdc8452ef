"""Ingest of every format, and bad input: quarantined with source, line and reason; the funnel balances."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.partition import PartitionPlan
from pipeline.planner import plan_partitions
from pipeline.runner import run_workflow
from pipeline.segments import run_segment
from schemas.document import DOCUMENT_SCHEMA
from schemas.manifest import Funnel
from schemas.spec import InputSpec
from schemas.stages import PackConfig, TokenizeConfig
from storage.readers import RawBatch, concat_batches
from storage.streams import iter_file

from .conftest import make_spec


def read_file(source: str, fmt: str, cfg: InputSpec) -> RawBatch:
    """A whole file through the streaming readers, as one batch."""
    return concat_batches(iter_file(source, fmt, Path(source).stat().st_size, cfg, cfg.batch_bytes, ()))


GOOD = [{"id": "a", "text": "first document"}, {"text": "second, without id"}]


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def write_formats(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "jsonl": root / "a.jsonl",
        "gz": root / "b.jsonl.gz",
        "zst": root / "c.jsonl.zst",
        "parquet": root / "d.parquet",
        "csv": root / "e.csv",
        "txt": root / "txt" / "f.txt",
    }
    paths["jsonl"].write_bytes(_jsonl(GOOD))
    paths["gz"].write_bytes(gzip.compress(_jsonl(GOOD)))
    paths["zst"].write_bytes(zstandard.ZstdCompressor().compress(_jsonl(GOOD)))
    pq.write_table(pa.Table.from_pylist(GOOD, schema=pa.schema([("id", pa.string()), ("text", pa.string())])),
                   paths["parquet"])  # fmt: skip
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows([{"id": "a", "text": "first document"}, {"id": "", "text": "second, without id"}])
    paths["txt"].parent.mkdir()
    paths["txt"].write_text("a whole text file is one document\n")
    return paths


@pytest.mark.parametrize("kind", ["jsonl", "gz", "zst", "parquet", "csv"])
def test_each_format_reads_documents_with_provenance(tmp_path: Path, kind: str) -> None:
    path = write_formats(tmp_path)[kind]
    fmt = {"gz": "jsonl", "zst": "jsonl"}.get(kind, kind)
    batch = read_file(str(path), fmt, InputSpec(url="x"))
    docs = batch.documents
    assert docs.schema == DOCUMENT_SCHEMA
    assert docs.column("text").to_pylist() == ["first document", "second, without id"]
    assert docs.column("line").to_pylist() == [1, 2]
    assert docs.column("source").to_pylist() == [str(path)] * 2
    ids = docs.column("id").to_pylist()
    assert ids[0] == "a" and ids[1] and ids[1] != "a", "a missing id is generated"
    assert batch.n_input == 2 and batch.quarantine.num_rows == 0


def test_directory_glob_and_text_files(tmp_path: Path) -> None:
    write_formats(tmp_path / "in")
    spec = make_spec(str(tmp_path / "in"), str(tmp_path / "out"))
    plans = plan_partitions(spec)
    formats = {Path(source).name: p.format for p in plans for source in p.sources}
    assert formats == {"a.jsonl": "jsonl", "b.jsonl.gz": "jsonl", "c.jsonl.zst": "jsonl", "d.parquet": "parquet",
                       "e.csv": "csv", "f.txt": "text"}  # fmt: skip
    assert all(len({formats[Path(s).name] for s in p.sources}) == 1 for p in plans), "one format per partition"
    spec = make_spec(str(tmp_path / "in" / "*.jsonl*"), str(tmp_path / "out"))
    assert sum(len(p.sources) for p in plan_partitions(spec)) == 3


def test_configurable_fields(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(_jsonl([{"uid": 7, "body": "text lives here"}]))
    batch = read_file(str(path), "jsonl", InputSpec(url="x", text_field="body", id_field="uid"))
    assert batch.documents.to_pylist()[0] | {"source": None} == {
        "id": "7", "text": "text lives here", "source": None, "line": 1
    }  # fmt: skip


def _truncated_gz() -> bytes:
    payload = _jsonl([{"text": f"document number {i} " * 20} for i in range(3000)])
    data = gzip.compress(payload)
    return data[: len(data) // 2]


BAD_INPUTS = {
    "malformed_json": (b'{"text": "ok"}\n{"text": "unterminated\n', "jsonl", 2, None),
    "invalid_utf8": (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "jsonl", 2, None),
    "missing_field": (b'{"text": "ok"}\n{"body": "no text"}\n', "jsonl", 2, "text"),
    "non_string_field": (b'{"text": "ok"}\n{"text": ["a", "list"]}\n', "jsonl", 2, "text"),
    "empty_text": (b'{"text": "ok"}\n{"text": "  \\n "}\n', "jsonl", 2, "text"),
    "truncated_file": (_truncated_gz(), "jsonl.gz", None, None),
}


@pytest.mark.parametrize("reason", sorted(BAD_INPUTS))
def test_bad_input_is_quarantined_and_funnel_balances(tmp_path: Path, reason: str) -> None:
    data, suffix, line, field = BAD_INPUTS[reason]
    source = tmp_path / f"bad.{suffix}"
    source.write_bytes(data)
    spec = make_spec(str(source), str(tmp_path / "out"), stages=[TokenizeConfig(), PackConfig(seq_len=64)])
    plan = PartitionPlan(0, (str(source),), "jsonl", sizes=(source.stat().st_size,))
    report = run_segment(plan, spec, 0)
    quarantine = pq.read_table(tmp_path / "out" / "quarantine" / "part-00000.parquet").to_pylist()
    assert [q["reason"] for q in quarantine] == [reason]
    record = quarantine[0]
    assert record["source"] == str(source) and record["field"] == field
    if line is not None:
        assert record["line"] == line
    assert record["detail"].startswith(f"{source}:{record['line']}: ")
    assert report.kept >= 1 and report.quarantined == {reason: 1}
    funnel = Funnel.from_reports([report])
    assert funnel.balanced and funnel.input == funnel.kept + 1


def test_job_with_every_bad_kind_finishes_and_balances(tmp_path: Path) -> None:
    """One job over a file per bad kind plus good files: it completes and accounts for every record."""
    root = tmp_path / "in"
    write_formats(root)
    for reason, (data, suffix, _, _) in BAD_INPUTS.items():
        (root / f"bad-{reason}.{suffix}").write_bytes(data)
    (root / "huge.jsonl").write_bytes(_jsonl([{"text": "x" * 3000}]))
    spec = make_spec(str(root), str(tmp_path / "out"), input={"url": str(root), "max_doc_bytes": 2000})
    result = run_workflow(spec, workers=1, show_progress=False)
    funnel = result.manifest.funnel
    assert funnel.balanced
    assert funnel.quarantined == {reason: 1 for reason in BAD_INPUTS} | {"too_large": 1}
    saved = json.loads((tmp_path / "out" / "stats" / "funnel.json").read_text())
    assert saved["input"] == saved["kept"] + sum(saved["dropped"].values()) + sum(saved["quarantined"].values())
    docs = pq.read_table(tmp_path / "out" / "docs").to_pylist()
    assert len(docs) == funnel.kept and all(d["status"] == "kept" and d["n_tokens"] > 0 for d in docs)

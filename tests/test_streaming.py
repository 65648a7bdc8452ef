"""Streaming splits: compressed files, CSV and Parquet read in bounded batches with exact lines; several global
steps in one chain; progress as bytes with rate and ETA when stdout is not a terminal."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import random
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.planner import MAX_STREAM_SPLITS, plan_partitions
from pipeline.progress import JobProgress
from pipeline.runner import run_workflow
from schemas.spec import InputSpec
from storage.decompress import compression_of
from storage.readers import concat_batches
from storage.streams import iter_compressed_jsonl, iter_csv, iter_file, iter_parquet

from .conftest import WORDS, make_spec


def _texts(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice([3, 20, 150]))) for _ in range(n)]


def _records(n: int) -> bytes:
    lines = [json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(_texts(n))]
    lines[10] = "{broken"
    lines[500] = ""
    return ("\n".join(lines) + "\n").encode()


def _rows(batches) -> tuple[list[tuple], list[tuple], int]:
    batch = concat_batches(list(batches))
    docs = [(r["id"], r["line"]) for r in batch.documents.select(["id", "line"]).to_pylist()]
    bad = [(r["line"], r["reason"]) for r in batch.quarantine.to_pylist()]
    return docs, bad, batch.n_input


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_compressed_file_streams_in_bounded_batches_with_exact_lines(tmp_path: Path, suffix: str) -> None:
    data = _records(2000)
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(data)
    packed = tmp_path / f"c{suffix}"
    packed.write_bytes(gzip.compress(data) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(data))
    cfg = InputSpec(url="x")
    batches = list(iter_compressed_jsonl(str(packed), packed.stat().st_size, cfg, batch_bytes=16 * 1024))
    assert len(batches) > 10, "many bounded batches, not one whole file"
    assert max(b.documents.column("text").nbytes for b in batches) < 3 * 16 * 1024
    assert sum(b.consumed for b in batches) == packed.stat().st_size
    reference = _rows(iter_file(str(plain), "jsonl", plain.stat().st_size, cfg, 1 << 30, ()))
    assert _rows(batches) == reference
    assert reference[1] == [(11, "malformed_json"), (501, "blank_line")] and reference[2] == 2000


def _compress(data: bytes, suffix: str) -> bytes:
    return gzip.compress(data, mtime=0) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_ranges_of_a_compressed_stream_read_every_record_once_with_exact_lines(tmp_path: Path, suffix: str) -> None:
    """Cuts anywhere (on a newline, just after one, inside a line, two inside one line, past the end): every
    record is read once, by the range where its first byte lies, with its line number."""
    data = _records(2000)
    packed = tmp_path / f"c{suffix}"
    packed.write_bytes(_compress(data, suffix))
    size, cfg = packed.stat().st_size, InputSpec(url="x")
    reference = _rows(iter_compressed_jsonl(str(packed), size, cfg, 1 << 30))
    newlines = [i for i, byte in enumerate(data) if byte == 10]
    rng = random.Random(3)
    for _ in range(5):
        inside = newlines[300] + 5
        cuts = {*rng.sample(range(1, len(data)), 4), newlines[100], newlines[100] + 1, inside, inside + 1}
        bounds = [0, *sorted(cuts), len(data) + 100]
        ranges = [*itertools.pairwise(bounds), (bounds[-1], None)]
        batches = [b for r in ranges for b in iter_compressed_jsonl(str(packed), size, cfg, 4096, r, share=7)]
        assert _rows(batches) == reference
        assert sum(b.consumed for b in batches) == 7 * len(ranges), "each range reports its share once"


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_fault_in_a_cut_stream_is_reported_once_by_the_range_that_reaches_it(tmp_path: Path, suffix: str) -> None:
    data = _records(1500)
    compressed = _compress(data, suffix)
    source = tmp_path / f"cut{suffix}"
    source.write_bytes(compressed[: len(compressed) * 2 // 3])
    size, cfg = source.stat().st_size, InputSpec(url="x")
    docs, bad, n_input = _rows(iter_compressed_jsonl(str(source), size, cfg, 1 << 30))
    assert [reason for _, reason in bad].count("truncated_file") == 1
    step = len(data) // 5
    ranges = [(k * step, (k + 1) * step) for k in range(4)] + [(4 * step, None)]
    cut = _rows(b for r in ranges for b in iter_compressed_jsonl(str(source), size, cfg, 4096, r, 1))
    assert (cut[0], sorted(cut[1]), cut[2]) == (docs, sorted(bad), n_input)


def test_a_big_compressed_file_is_planned_as_ranges_of_its_text(tmp_path: Path) -> None:
    data = _records(3000)
    for suffix in (".jsonl.zst", ".jsonl.gz"):
        source = tmp_path / suffix / f"big{suffix}"
        source.parent.mkdir()
        source.write_bytes(_compress(data, suffix))
        spec = make_spec(str(source), str(tmp_path / "out"), input={"url": str(source), "partition_bytes": 200_000})
        plans = plan_partitions(spec)
        assert len(plans) == MAX_STREAM_SPLITS[compression_of(suffix)]
        assert all(p.text_range is not None for p in plans)
        assert plans[0].text_range[0] == 0 and plans[-1].text_range[1] is None
        assert sum(p.sizes[0] for p in plans) == source.stat().st_size
        if suffix == ".jsonl.zst":  # the frame header's content size: ranges of the exact text
            assert plans[-1].text_range[0] == 3 * -(-len(data) // 4)


def test_a_truncated_stream_quarantines_its_tail_at_the_right_line(tmp_path: Path) -> None:
    data = _records(1200)
    compressed = zstandard.ZstdCompressor().compress(data)
    source = tmp_path / "cut.jsonl.zst"
    source.write_bytes(compressed[: len(compressed) * 2 // 3])
    docs, bad, n_input = _rows(iter_compressed_jsonl(str(source), source.stat().st_size, InputSpec(url="x"), 8192))
    assert bad[-1][1] == "truncated_file" and bad[-1][0] == docs[-1][1] + 1
    assert n_input == len(docs) + len(bad)
    assert [d[0] for d in docs] == [f"d{i}" for i in range(len(docs) + 2) if i not in (10, 500)][: len(docs)]


def test_a_truncated_gzip_keeps_every_byte_zlib_can_give_at_any_piece_size() -> None:
    """Cut at every point of a gzip stream, the inflater yields what zlib alone gets from the cut bytes, with pieces
    of 1 KiB as with 1 MiB: a call capped at the piece size can leave output inside zlib when the input has run
    out, and a truncated file lost the end of its last whole record with it (131 of 1,440 cut points)."""
    from storage.decompress import StreamInflater

    lines = [json.dumps({"text": "abcdefgh" * 40 + f" {k}"}) for k in range(400)]
    whole = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    for chunk in (1024, 1 << 20):
        for cut in range(20, len(whole) - 8, 3):
            blob = whole[:cut]
            inflater = StreamInflater(io.BytesIO(blob), "gzip", chunk)
            assert b"".join(inflater) == zlib.decompressobj(wbits=47).decompress(blob), (chunk, cut)
            assert inflater.problem is not None


def test_a_huge_line_in_a_compressed_stream_is_quarantined_without_being_held(tmp_path: Path) -> None:
    huge = json.dumps({"text": "x" * 300_000})
    data = "\n".join([json.dumps({"text": "before"}), huge, json.dumps({"text": "after"})]).encode()
    source = tmp_path / "h.jsonl.gz"
    source.write_bytes(gzip.compress(data))
    cfg = InputSpec(url="x", max_doc_bytes=10_000)
    batches = list(iter_compressed_jsonl(str(source), source.stat().st_size, cfg, batch_bytes=4096))
    docs, bad, n_input = _rows(batches)
    assert [d[1] for d in docs] == [1, 3] and bad == [(2, "too_large")] and n_input == 3
    assert max(len(q["raw"] or "") for b in batches for q in b.quarantine.to_pylist()) <= 512


def test_a_decompression_bomb_is_cut_and_quarantined(tmp_path: Path) -> None:
    source = tmp_path / "bomb.jsonl.zst"
    line = json.dumps({"text": "zzzz " * 50}).encode() + b"\n"
    source.write_bytes(zstandard.ZstdCompressor(level=19).compress(line * 400_000))  # ~100 MB from a few KB
    assert source.stat().st_size < 20_000
    docs, bad, n_input = _rows(iter_compressed_jsonl(str(source), source.stat().st_size, InputSpec(url="x"), 1 << 22))
    assert bad[-1][1] == "decompression_limit" and n_input == len(docs) + len(bad)
    assert len(docs) < 400_000


def test_csv_streams_in_batches_and_a_truncated_csv_gz_never_keeps_its_cut_row(tmp_path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["id", "text", "score"])
    writer.writeheader()
    texts = _texts(900)
    for i, text in enumerate(texts):
        writer.writerow({"id": f"r{i}", "text": text.replace(" ", "\n", 1) if i % 7 == 0 else text, "score": i})
    data = buffer.getvalue().encode()
    whole = tmp_path / "t.csv"
    whole.write_bytes(data)
    cfg = InputSpec(url="x")
    batches = list(iter_csv(str(whole), whole.stat().st_size, cfg, batch_bytes=8192))
    assert len(batches) > 5
    docs, bad, n_input = _rows(batches)
    assert [d[0] for d in docs] == [f"r{i}" for i in range(900)] and not bad and n_input == 900
    assert sum(b.consumed for b in batches) == whole.stat().st_size
    cut = tmp_path / "cut.csv.gz"
    compressed = gzip.compress(data)
    cut.write_bytes(compressed[: len(compressed) // 2])
    docs, bad, n_input = _rows(iter_csv(str(cut), cut.stat().st_size, cfg, batch_bytes=8192))
    assert bad[-1][1] == "truncated_file" and n_input == len(docs) + len(bad)
    kept = {d[0] for d in docs}
    source_rows = {f"r{i}": t for i, t in enumerate(texts)}
    batch = concat_batches(list(iter_csv(str(cut), cut.stat().st_size, cfg, batch_bytes=8192)))
    for row in batch.documents.select(["id", "text"]).to_pylist():  # no kept row is a cut-off fragment
        assert row["text"].replace("\n", " ", 1) == source_rows[row["id"]]
    assert len(kept) > 100


def test_parquet_row_groups_stream_in_batches(tmp_path: Path) -> None:
    texts = _texts(3000)
    source = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(3000)], "text": texts}), source, row_group_size=1000)
    cfg = InputSpec(url="x")
    size = source.stat().st_size
    batches = list(iter_parquet(str(source), (1, 3), 1001, size, cfg, batch_bytes=20_000))
    assert len(batches) > 10
    docs, bad, n_input = _rows(batches)
    assert docs == [(f"p{i}", i + 1) for i in range(1000, 3000)] and not bad and n_input == 2000
    assert sum(b.consumed for b in batches) == size


def _docs(out: Path) -> list[tuple]:
    rows = pq.read_table(out / "docs").select(["source", "line", "status", "stage"]).to_pylist()
    return sorted((r["source"], r["line"], r["status"], r["stage"]) for r in rows)


def test_a_big_compressed_file_gives_the_same_documents_whatever_the_batch_size(tmp_path: Path) -> None:
    source = tmp_path / "in" / "big.jsonl.zst"
    source.parent.mkdir()
    source.write_bytes(zstandard.ZstdCompressor().compress(_records(3000)))
    outputs = {}
    for batch_bytes in (4096, 1 << 24):
        out = tmp_path / f"out-{batch_bytes}"
        spec = make_spec(str(source), str(out), input={"url": str(source), "batch_bytes": batch_bytes})
        funnel = run_workflow(spec, workers=1, show_progress=False).manifest.funnel
        assert funnel.input == 3000 and funnel.balanced
        outputs[batch_bytes] = _docs(out), sorted(pq.read_table(out / "quarantine").column("line").to_pylist())
    assert outputs[4096] == outputs[1 << 24]


def test_two_global_steps_in_one_chain(tmp_path: Path) -> None:
    """exact_dedup → quality → minhash_dedup: two barriers; every stage runs once per document and the funnel
    balances; a near duplicate that only the second barrier sees is dropped there."""
    base = _texts(200, seed=3)
    texts = [*base, base[5], base[7] + " extra words here", *_texts(50, seed=4)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    stages = [{"stage": "exact_dedup"}, {"stage": "quality", "drop": False}, {"stage": "minhash_dedup",
              "threshold": 0.5}, {"stage": "tokenize"}, {"stage": "pack", "seq_len": 256}]  # fmt: skip
    spec = make_spec(str(source), str(tmp_path / "out"), stages=stages)
    assert len(plan_partitions(spec)) > 4
    funnel = run_workflow(spec, workers=2, show_progress=False).manifest.funnel
    assert funnel.balanced and funnel.input == len(texts)
    assert funnel.dropped.get("exact_duplicate", 0) >= 1
    docs = pq.read_table(tmp_path / "out" / "docs").to_pylist()
    assert {"dedup_cluster", "dedup2_cluster"} <= set(docs[0])
    stages_of = {(d["line"], d["status"], d["stage"]) for d in docs if d["status"] != "kept"}
    assert (201, "exact_duplicate", "dedup") in stages_of
    assert any(stage == "dedup2" for _, _, stage in stages_of), stages_of
    assert not (tmp_path / "out" / "_work").exists()
    clusters = pq.read_table(tmp_path / "out" / "dedup" / "clusters.parquet").to_pylist()
    assert {c["step"] for c in clusters} == {"dedup", "dedup2"}
    for step in ("dedup", "dedup2"):  # every cluster of each step has exactly one kept document
        kept = Counter(c["cluster"] for c in clusters if c["step"] == step and c["kept"])
        assert set(kept.values()) == {1} and kept.keys() == {c["cluster"] for c in clusters if c["step"] == step}


def test_progress_prints_lines_with_bytes_rate_and_eta_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = []
    with JobProgress("job", ["read", "write"], 10_000_000, True, seen.append, interval=0.05) as progress:
        progress.advance("read", 4_000_000)
        progress.set_phase("exact_dedup: keys of 3/3 batches read")
        import time

        time.sleep(0.2)
        progress.advance("write", 2_000_000)
    err = capsys.readouterr().err
    assert "job: exact_dedup: keys of 3/3 batches read" in err
    assert "read 4.0 MB/10.0 MB (40%)" in err and "ETA" in err and "MB/s" in err
    assert seen[-1]["steps"] == {"read": 4_000_000, "write": 2_000_000} and seen[-1]["total"] == 10_000_000
    assert seen[-1]["eta_seconds"]["read"] > 0


def test_three_thousand_small_files_make_few_output_files_and_little_padding(tmp_path: Path) -> None:
    """Outputs follow the data, not the files: 3,000 small JSONL files (2.7 MB) are one or two partitions (splits
    are at least 2 MiB), so a handful of output files; best-fit packing of short documents across batches leaves
    under 1% padding."""
    source = tmp_path / "in"
    source.mkdir()
    texts = _texts(9000, seed=8)
    for k in range(3000):
        (source / f"f-{k:05d}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in texts[3 * k : 3 * k + 3])
        )
    out = tmp_path / "out"
    inputs = {"url": str(source), "partition_bytes": 128 * 2**20, "batch_bytes": 64 * 1024}
    stages = [{"stage": "tokenize"}, {"stage": "pack", "seq_len": 1024}]
    spec = make_spec(str(source), str(out), input=inputs, stages=stages)
    funnel = run_workflow(spec, workers=2, show_progress=False).manifest.funnel
    assert funnel.input == 9000 and funnel.balanced and funnel.partitions <= 2
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 100, len(files)
    assert funnel.padding / (funnel.sequences * 1024) < 0.01


def _peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return 0.0


@pytest.mark.slow
def test_a_one_gigabyte_compressed_file_runs_within_a_two_gib_worker(tmp_path: Path) -> None:
    """The size is the point: 1 GB of text in one .jsonl.zst, read whole by one task, through tokenize and pack
    on workers limited to 2 GiB; every worker's peak RSS stays under the budget."""
    from distributed import Client

    from pipeline.cluster import local_cluster

    source = tmp_path / "in" / "big.jsonl.zst"
    source.parent.mkdir()
    texts = _texts(20_000, seed=21)
    block = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    with source.open("wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as out:
        written = 0
        while written < 2**30:
            out.write(block)
            written += len(block)
    stages = [{"stage": "tokenize"}, {"stage": "pack", "seq_len": 4096}]
    spec = make_spec(str(source), str(tmp_path / "out"), stages=stages, input={"url": str(source)})
    with (
        local_cluster(2, "2GiB") as cluster,
        Client(cluster) as client,
    ):
        funnel = run_workflow(spec, scheduler=cluster.scheduler_address, show_progress=False).manifest.funnel
        peaks = client.run(_peak_rss_gib)
    assert funnel.balanced and funnel.kept == funnel.input > 1_000_000
    assert max(peaks.values()) < 2.0, peaks


def test_a_csv_row_with_bad_utf8_is_one_quarantine_record_and_the_others_are_kept(tmp_path: Path) -> None:
    rows = b"".join(b"%d,row number %d\n" % (i, i) for i in range(3000))
    source = tmp_path / "bad.csv"
    source.write_bytes(b"id,text\n" + rows.replace(b"row number 1500\n", b"row \xff 1500\n"))
    for batch_bytes in (1024, 1 << 25):
        docs, bad, n_input = _rows(iter_csv(str(source), source.stat().st_size, InputSpec(url="x"), batch_bytes))
        assert bad == [(1501, "invalid_utf8")] and len(docs) == 2999 and n_input == 3000
        assert docs[-1] == ("2999", 3000)


def test_columnar_oddities_are_read_or_quarantined_per_row(tmp_path: Path) -> None:
    """A duplicated text column quarantines each row (which column is the text?); dictionary-encoded text and
    ids that are structs are read."""
    cfg = InputSpec(url="x")
    dup = tmp_path / "dup.csv"
    dup.write_text("text,text\na,b\nc,d\n")
    docs, bad, n_input = _rows(iter_csv(str(dup), dup.stat().st_size, cfg, 1 << 20))
    assert not docs and [b[1] for b in bad] == ["duplicate_field"] * 2 and n_input == 2
    odd = tmp_path / "odd.parquet"
    table = pa.table({"text": pa.array(["x y", "z w"]).dictionary_encode(), "id": [{"a": 1}, {"a": 2}]})
    pq.write_table(table, odd)
    batch = concat_batches(list(iter_parquet(str(odd), None, 1, odd.stat().st_size, cfg, 1 << 20)))
    assert batch.documents.column("id").to_pylist() == ['{"a":1}', '{"a":2}'] and batch.quarantine.num_rows == 0


def test_a_batch_of_many_short_lines_is_cut_by_record_count_with_exact_lines(tmp_path: Path) -> None:
    """A batch of more lines than ``MAX_BATCH_RECORDS`` (short records, blank lines) is parsed in pieces of at
    most that many records, each line numbered as in the file and none read twice."""
    from storage.streams import MAX_BATCH_RECORDS, iter_line_range

    n = MAX_BATCH_RECORDS * 2 + 123
    lines = [b"" if i % 7 == 3 else b'{"text": "w%d"}' % i for i in range(n)]
    path = tmp_path / "short.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    cfg = InputSpec(url="x")
    batches = list(iter_line_range(str(path), 0, path.stat().st_size, 1, cfg, 1 << 30))
    assert len(batches) == 3 and max(b.n_input for b in batches) == MAX_BATCH_RECORDS
    batch = concat_batches(batches)
    assert batch.n_input == n and sum(b.consumed for b in batches) == path.stat().st_size
    assert batch.documents.column("line").to_pylist() == [i + 1 for i in range(n) if i % 7 != 3]
    assert batch.documents.column("text").to_pylist() == [f"w{i}" for i in range(n) if i % 7 != 3]
    assert batch.quarantine.column("line").to_pylist() == [i + 1 for i in range(n) if i % 7 == 3]


def test_joined_small_batches_never_grow_past_the_batch_size(tmp_path: Path) -> None:
    """Files read one after another are joined into batches of at most ``batch_bytes`` of text: a file's short
    last batch goes out alone rather than with the next file's full first one (that made batches of twice the
    size, and a worker's memory follows its batches). Every record comes out once, in order."""
    from storage.streams import coalesce

    batch_bytes = 10_000
    paths = []
    for k, n_docs in enumerate([13, 4, 1, 9, 30, 2]):  # files of 1.3x, 0.4x, 0.1x ... the batch size
        path = tmp_path / f"f{k}.jsonl"
        path.write_text("".join(json.dumps({"id": f"{k}-{i}", "text": "x" * 1000}) + "\n" for i in range(n_docs)))
        paths.append(path)
    cfg = InputSpec(url="x")
    files = (iter_file(str(p), "jsonl", p.stat().st_size, cfg, batch_bytes, ()) for p in paths)
    joined = list(coalesce((batch for batches in files for batch in batches), batch_bytes))
    sizes = [b.documents.column("text").nbytes for b in joined]
    single = [b.documents.column("text").nbytes for p in paths
              for b in iter_file(str(p), "jsonl", p.stat().st_size, cfg, batch_bytes, ())]  # fmt: skip
    assert max(sizes) <= max(batch_bytes, max(single)), sizes
    assert len(joined) < len(single)  # small ones were joined
    ids = [f"{k}-{i}" for k, n in enumerate([13, 4, 1, 9, 30, 2]) for i in range(n)]
    assert concat_batches(joined).documents.column("id").to_pylist() == ids

"""Partitions by size: JSONL byte ranges, Parquet row groups, small files grouped; same documents and verdicts
whatever the partition size, no record lost or read twice at a boundary, exact source lines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.planner import plan_partitions
from pipeline.runner import run_workflow

from .conftest import WORDS, make_spec
from .dedup_corpus import planted_pairs


def _texts(n: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 8, 40, 300]))) for _ in range(n)]


def _docs(out: Path) -> list[dict]:
    rows = pq.read_table(out / "docs").select(["id", "source", "line", "status", "n_tokens"]).to_pylist()
    return sorted(rows, key=lambda r: (r["source"], r["line"]))


def _quarantine(out: Path) -> list[tuple]:
    rows = pq.read_table(out / "quarantine").to_pylist()
    return sorted((r["source"], r["line"], r["reason"]) for r in rows)


def test_a_large_jsonl_file_is_read_in_byte_ranges_without_losing_or_repeating_a_record(tmp_path: Path) -> None:
    texts = _texts(1500)
    lines = [json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(texts)]
    lines[100] = "{not json"  # bad records on and near range boundaries still land in quarantine with their line
    lines[101] = ""
    lines[700] = json.dumps({"id": "e", "text": ""})
    source = tmp_path / "in" / "big.jsonl"
    source.parent.mkdir()
    source.write_text("\n".join(lines))  # no newline after the last record
    outputs = {}
    for partition_bytes in (4096, 7 * 1024 + 3, 2**20):
        spec = make_spec(str(source), str(tmp_path / f"out-{partition_bytes}"), input={"url": str(source),
                         "partition_bytes": partition_bytes})  # fmt: skip
        plans = plan_partitions(spec)
        size = source.stat().st_size
        assert len(plans) == max(1, round(size / partition_bytes))  # equal ranges, none a sliver
        assert max(sum(p.sizes) for p in plans) <= 1.5 * partition_bytes
        result = run_workflow(spec, workers=2, show_progress=False)
        funnel = result.manifest.funnel
        assert funnel.input == 1500 and funnel.balanced and funnel.partitions == len(plans)
        outputs[partition_bytes] = (_docs(spec_out := tmp_path / f"out-{partition_bytes}"), _quarantine(spec_out))
    docs, quarantine = outputs[2**20]
    assert [d["line"] for d in docs] == [i + 1 for i in range(1500) if i not in (100, 101, 700)]
    assert [d["id"] for d in docs] == [f"d{i}" for i in range(1500) if i not in (100, 101, 700)]
    assert [(q[1], q[2]) for q in quarantine] == [(101, "malformed_json"), (102, "blank_line"), (701, "empty_text")]
    assert outputs[4096] == outputs[2**20] and outputs[7 * 1024 + 3] == outputs[2**20]


def test_a_parquet_file_is_split_by_row_groups_with_exact_row_numbers(tmp_path: Path) -> None:
    texts = _texts(2000, seed=9)
    texts[1234] = None  # a missing text, quarantined at its row
    source = tmp_path / "in" / "rows.parquet"
    source.parent.mkdir()
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(2000)], "text": texts}), source, row_group_size=100)
    small = make_spec(str(source), str(tmp_path / "small"), input={"url": str(source), "partition_bytes": 4096})
    plans = plan_partitions(small)
    assert len(plans) > 5 and all(p.row_groups is not None for p in plans)
    assert plans[0].row_groups[0] == 0 and plans[-1].row_groups[1] == 20
    run_workflow(small, workers=2, show_progress=False)
    whole = make_spec(str(source), str(tmp_path / "whole"), input={"url": str(source), "partition_bytes": 2**30})
    assert len(plan_partitions(whole)) == 1
    run_workflow(whole, workers=1, show_progress=False)
    assert _docs(tmp_path / "small") == _docs(tmp_path / "whole")
    assert _quarantine(tmp_path / "small") == [(str(source), 1235, "missing_field")]
    assert [d["line"] for d in _docs(tmp_path / "small")][:3] == [1, 2, 3]


def test_small_files_are_grouped_into_few_partitions_and_few_output_files(tmp_path: Path) -> None:
    corpus = tmp_path / "many"
    corpus.mkdir()
    texts = _texts(600, seed=2)
    for i in range(300):
        (corpus / f"f{i:04d}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in texts[2 * i : 2 * i + 2])
        )
    spec = make_spec(str(corpus), str(tmp_path / "out"), input={"url": str(corpus), "partition_bytes": 64 * 1024})
    plans = plan_partitions(spec)
    total = sum(p.stat().st_size for p in corpus.iterdir())
    assert len(plans) <= total // (64 * 1024) + 1 and sum(len(p.sources) for p in plans) == 300
    result = run_workflow(spec, workers=2, show_progress=False)
    assert result.manifest.funnel.kept == 600
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) <= 60, len(files)


@pytest.mark.parametrize("partition_bytes", [2048, 2**20])
def test_dedup_verdicts_do_not_depend_on_the_partition_size(tmp_path: Path, partition_bytes: int) -> None:
    pairs = planted_pairs(120, seed=4)
    source = tmp_path / "in" / "pairs.jsonl"
    source.parent.mkdir()
    source.write_text("".join(json.dumps({"id": f"p{i}-{k}", "text": p[k]}) + "\n"
                              for i, p in enumerate(pairs) for k in (0, 1)))  # fmt: skip
    stages = [{"stage": "exact_dedup"}, {"stage": "minhash_dedup"}]
    reference = make_spec(str(source), str(tmp_path / "ref"), stages=stages,
                          input={"url": str(source), "partition_bytes": 2**30})  # fmt: skip
    run_workflow(reference, workers=1, show_progress=False)
    spec = make_spec(str(source), str(tmp_path / "out"), stages=stages,
                     input={"url": str(source), "partition_bytes": partition_bytes})  # fmt: skip
    run_workflow(spec, workers=2, show_progress=False)
    assert _docs(tmp_path / "out") == _docs(tmp_path / "ref")
    assert sum(d["status"] == "near_duplicate" for d in _docs(tmp_path / "ref")) > 20


def test_the_stages_before_the_global_step_run_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.segments as segments
    from pipeline.dedup import DECISIONS_SCHEMA

    source = tmp_path / "in" / "a.jsonl"
    source.parent.mkdir()
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(50)))
    stages = [{"stage": "language"}, {"stage": "quality", "drop": False}, {"stage": "exact_dedup"},
              {"stage": "tokenize"}, {"stage": "pack"}]  # fmt: skip
    spec = make_spec(str(source), str(tmp_path / "out"), stages=stages,
                     input={"url": str(source), "partition_bytes": 2**30, "batch_bytes": 2048})  # fmt: skip
    ran: list[str] = []
    real = segments.stage_function

    def counting(name: str):
        ran.append(name)
        return real(name)

    monkeypatch.setattr(segments, "stage_function", counting)
    plan = plan_partitions(spec)[0]
    state = segments.run_segment(plan, spec, 0)  # writes the kept documents and the dedup keys
    batches = len(state.batches)
    assert batches > 3, "several batches in one partition"
    assert ran == ["language", "quality"] * batches
    ran.clear()
    report = segments.run_segment(plan, spec, 1, decisions=lambda _: DECISIONS_SCHEMA.empty_table())
    assert ran == ["tokenize"] * batches
    assert report.input == 50 and report.kept + sum(report.dropped.values()) == 50


def test_rl_set_keeps_the_verified_copy_of_a_prompt_whose_first_copy_is_malformed(tmp_path: Path) -> None:
    from pipeline.cli import main

    prompt = "What is 2 + 2? Give the result as your final answer."
    records = [
        {"id": "bad", "prompt": prompt, "response": "no think block here, the answer is 4", "ground_truth": "4"},
        {"id": "good", "prompt": prompt, "response": "<think>\\n2 + 2 = 4\\n</think>\\n\\nThe answer is \\\\boxed{4}.",
         "ground_truth": "4"},
    ]  # fmt: skip
    source = tmp_path / "qa.jsonl"
    source.write_text("".join(json.dumps(r) for r in records[:1]) + "\n" + json.dumps(records[1]).replace(
        "\\\\n", "\\n").replace("\\\\\\\\", "\\\\") + "\n")  # fmt: skip
    workflow = Path(__file__).resolve().parents[1] / "workflows" / "rl-verified-qa.yaml"
    assert main(["run", str(workflow), "--input", str(source), "--output", str(tmp_path / "out"),
                 "--no-progress", "--workers", "1"]) == 0  # fmt: skip
    rows = pq.read_table(tmp_path / "out" / "rl").to_pylist()
    assert len(rows) == 1 and rows[0]["extra_info"]["id"] == "good" if rows else False, rows


def test_a_record_longer_than_max_doc_bytes_is_cut_and_quarantined_not_read_whole(tmp_path: Path) -> None:
    from storage.streams import read_line_range

    texts = _texts(200, seed=8)
    lines = [json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(texts)]
    lines[50] = json.dumps({"id": "huge", "text": "word " * 200_000})  # 1 MB on one line
    source = tmp_path / "in" / "long.jsonl"
    source.parent.mkdir()
    source.write_text("\n".join(lines) + "\n")
    start = source.read_bytes().index(b'{"id": "huge"')
    assert len(read_line_range(str(source), start, start + 10, max_tail=5000)) <= 10 + 5000
    where = {"url": str(source), "partition_bytes": 8 * 1024, "max_doc_bytes": 4096}
    spec = make_spec(str(source), str(tmp_path / "out"), input=where)
    funnel = run_workflow(spec, workers=1, show_progress=False).manifest.funnel
    assert funnel.input == 200 and funnel.balanced and funnel.quarantined == {"too_large": 1}
    assert _quarantine(tmp_path / "out") == [(str(source), 51, "too_large")]
    assert [d["line"] for d in _docs(tmp_path / "out")] == [i + 1 for i in range(200) if i != 50]


def test_a_small_corpus_is_cut_into_several_splits_with_the_default_size(tmp_path: Path) -> None:
    """128 MiB partitions would make a 20 MB corpus one task on one core; it becomes ten 2 MiB splits, and a
    large corpus keeps the configured size. The plan depends on the input only, not on the cluster."""
    from pipeline.planner import MIN_SPLIT_BYTES, split_target

    line = json.dumps({"text": "word " * 200}) + "\n"
    source = tmp_path / "in.jsonl"
    source.write_text(line * (20_000_000 // len(line)))
    spec = make_spec(str(source), str(tmp_path / "out"), input={"url": str(source), "partition_bytes": 128 * 2**20})
    plans = plan_partitions(spec)
    assert len(plans) == round(source.stat().st_size / MIN_SPLIT_BYTES) == 10
    assert split_target(128 * 2**20, 10 * 2**30) == 128 * 2**20 and split_target(1024, 10**9) == 1024
    assert split_target(128 * 2**20, 512 * 2**20) == 32 * 2**20

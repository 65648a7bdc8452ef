"""The pretraining chain, Refinery vs datatrove, same stages, same corpus, same two workers, one process.

datatrove (0.10, LocalPipelineExecutor), as its docs chain it:
  JsonlReader → GopherRepetition → GopherQuality → C4Quality → FineWebQuality → JsonlWriter → MinhashDedupSignature;
  MinhashDedupBuckets; MinhashDedupCluster; JsonlReader → MinhashDedupFilter → DocumentTokenizer (DeepSeek).
Refinery: ``quality → minhash_dedup → tokenize → pack: none`` (Megatron documents), a fresh cluster then a warm one.
Each side is the best of ``--repeats`` runs (3; Refinery's each on a fresh cluster; the warm run once). Then the
seconds of each phase of the fresh run (segments, dedup step, dropped-text sample and commit), and the time
per stage of one batch of the same text on one core, in this process.

    python bench/bench_pretrain.py [--workers 2] [--repeats 3]

The corpus is ``bench_quality.py``'s prose corpus (READMEs, licences and reference-manual prose from the
environment, each document written twice, in different files): real prose with real near-duplicates.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dedup import minhash_stages, run_stages
from bench_quality import best_of, fresh_then_warm, prose_corpus, speed_report
from bench_tokenize import EOS, text_mb

from schemas.spec import InputSpec, WorkflowSpec, parse_spec
from stages.tokenize import tokenizer_path

HERE = Path(__file__).resolve().parent
STAGES = [{"stage": "quality"}, {"stage": "minhash_dedup"}, {"stage": "tokenize"}, {"stage": "pack", "mode": "none"}]


def datatrove_chain(corpus: Path, out: Path, workers: int) -> float:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.pipeline.writers import JsonlWriter

    files = len(list(corpus.glob("*.jsonl")))
    filters = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]
    tokenizer = DocumentTokenizer(str(out / "tokens"), tokenizer_name_or_path=tokenizer_path("deepseek-v3"),
                                  eos_token=EOS, shuffle_documents=False)  # fmt: skip
    filtered = [JsonlReader(str(corpus)), *filters, JsonlWriter(str(out / "filtered"))]
    stages = minhash_stages(filtered, out, files, [tokenizer])
    stages[-1] = ([JsonlReader(str(out / "filtered")), *stages[-1][0][1:]], files)  # the filter reads the kept
    return run_stages(stages, out, workers)


def refinery_chain(corpus: Path, out: Path, workers: int, phases: dict, repeats: int) -> tuple[float, float, dict]:
    def spec(source: Path, target: Path) -> WorkflowSpec:
        output = {"url": str(target), "shard_formats": ["megatron"]}
        return parse_spec({"name": "bench-pretrain", "input": {"url": str(source)}, "output": output, "stages": STAGES})

    return fresh_then_warm(spec, corpus, out, workers, phases, repeats)


def stage_seconds(corpus: Path, mb_limit: float = 4.0) -> dict[str, float]:
    """Two batches of distinct documents through each stage on one core: the first (about ``mb_limit`` MB) loads
    the tokenizer and word rules (as a warm worker has them), the second, as many lines of text this process has
    not seen (5.6 MB here), is timed. (The corpus holds each document twice; its first half is every document once.)"""
    from schemas.stages import MinHashDedupConfig, PackConfig, QualityConfig, TokenizeConfig
    from stages.minhash import signatures
    from stages.pack import frame_documents
    from stages.quality import quality
    from stages.tokenize import tokenize
    from storage.readers import read_jsonl

    lines = [line for path in sorted(corpus.glob("part-0*.jsonl")) for line in path.read_bytes().splitlines(True)]
    cut = int(np.searchsorted(np.cumsum([len(line) for line in lines]), mb_limit * 1e6)) + 1
    timings: dict[str, float] = {}
    for data in (b"".join(lines[:cut]), b"".join(lines[cut : 2 * cut])):
        start = time.perf_counter()
        batch = read_jsonl("bench", data, None, InputSpec(url="x"))
        timings["read + parse JSONL"] = time.perf_counter() - start
        start = time.perf_counter()
        kept = quality(batch.documents, QualityConfig())
        kept = kept.filter(pa.compute.is_null(kept.column("drop_reason")))
        timings["quality (Gopher, C4, FineWeb)"] = time.perf_counter() - start
        start = time.perf_counter()
        signatures(kept.column("text"), MinHashDedupConfig())
        timings["minhash signatures"] = time.perf_counter() - start
        start = time.perf_counter()
        tokens = tokenize(kept, TokenizeConfig())
        timings["tokenize"] = time.perf_counter() - start
        start = time.perf_counter()
        frame_documents(tokens, PackConfig(mode="none"))
        timings["frame documents"] = time.perf_counter() - start
    mb = sum(len(t.encode()) for t in batch.documents.column("text").to_pylist()) / 1e6
    return {"batch_mb": round(mb, 1), **{k: round(v, 3) for k, v in timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs on each side")
    args = parser.parse_args()
    corpus = prose_corpus(HERE / "data" / "prose")
    _, mb = text_mb(corpus)
    scratch = HERE / "results" / "scratch-pretrain"
    shutil.rmtree(scratch, ignore_errors=True)
    dt = best_of(args.repeats, lambda out: datatrove_chain(corpus, out, args.workers), scratch / "datatrove")
    phases: dict[str, float] = {}
    cold, warm, funnel = refinery_chain(corpus, scratch / "ours", args.workers, phases, args.repeats)
    shutil.rmtree(scratch, ignore_errors=True)
    report = {**speed_report(mb, args.workers, dt, cold, warm, funnel), "fresh_run_phase_seconds": phases,
              "per_stage_seconds_one_core": stage_seconds(corpus)}  # fmt: skip
    print(json.dumps(report, indent=1))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "pretrain.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

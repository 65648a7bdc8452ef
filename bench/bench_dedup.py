"""MinHash near-duplicate dedup: Refinery vs datatrove's four MinHash stages, same corpus, one run.

Both use word 5-grams, 14 bands x 8 rows and the same worker count. datatrove runs signature → buckets →
cluster → filter with LocalPipelineExecutor; Refinery runs ``minhash_dedup`` as a workflow (ingest, global
step on Dask, docs + cluster table written). Then Refinery again on a corpus 4x larger (distinct text).

    python bench/bench_dedup.py [--size-mb 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from distributed import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenize import text_mb
from corpus import PhasePeaks, corpora

from pipeline.cluster import local_cluster
from pipeline.runner import JobHooks, run_workflow
from schemas.spec import parse_spec

HERE = Path(__file__).resolve().parent


def minhash_stages(
    documents: list, out: Path, files: int, then: list, removed: object = None
) -> list[tuple[list, int]]:
    """datatrove's four MinHash steps (5-grams, 14 x 8) as (pipeline, tasks): signatures of ``documents`` (a
    reader and the steps before), buckets, clusters, then the reader again with the filter (its exclusion writer
    ``removed``) and ``then``."""
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    return [
        ([*documents, MinhashDedupSignature(str(out / "sigs"), config=config)], files),
        ([MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=config)], config.num_buckets),
        ([MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=config)], 1),
        ([documents[0], MinhashDedupFilter(str(out / "remove"), exclusion_writer=removed), *then], files),
    ]


def run_stages(stages: list[tuple[list, int]], out: Path, workers: int) -> float:
    from datatrove.executor import LocalPipelineExecutor

    start = time.perf_counter()
    for i, (pipeline, tasks) in enumerate(stages):
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(out / f"logs{i}")).run()
    return time.perf_counter() - start


def datatrove_minhash(corpus: Path, out: Path, workers: int) -> tuple[float, int]:
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    files = len(list(corpus.glob("*.jsonl")))
    stages = minhash_stages([JsonlReader(str(corpus))], out, files, [JsonlWriter(str(out / "kept"))],
                            removed=JsonlWriter(str(out / "removed")))  # fmt: skip
    seconds = run_stages(stages, out, workers)
    removed = sum(1 for f in (out / "removed").rglob("*.jsonl*") for _ in _lines(f))
    return seconds, removed


def _lines(path: Path) -> list[bytes]:
    import gzip

    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).splitlines()


def refinery_minhash(corpus: Path, out: Path, workers: int) -> dict[str, float]:
    spec = parse_spec(
        {
            "name": "bench-dedup",
            "input": {"url": str(corpus)},
            "output": {"url": str(out)},
            "stages": [{"stage": "minhash_dedup", "bands": 14, "rows": 8, "ngram": 5}],
        }
    )
    with (
        local_cluster(workers) as cluster,  # as `refinery run` starts it
        Client(cluster) as client,
    ):
        phases = PhasePeaks(client)
        start = time.perf_counter()
        hooks = JobHooks(on_progress=phases.on_progress)
        result = run_workflow(spec, scheduler=cluster.scheduler_address, show_progress=False, hooks=hooks)
        seconds = time.perf_counter() - start
        phases.finish()
    return {
        "seconds": seconds,
        "near_duplicates": result.manifest.funnel.dropped.get("near_duplicate", 0),
        "peak_rss_mb_per_worker": max(phases.peaks.values()),
        "peak_rss_mb_per_worker_by_phase": phases.peaks,
    }


def short_documents(directory: Path, n: int, seed: int = 11) -> Path:
    """``n`` short documents (40-80 words of a Zipf-distributed vocabulary of 50,000 made-up words, 300-600
    bytes), 30% of them near-copies of an earlier one (one word replaced: Jaccard about 0.85 on word 5-grams),
    in JSONL files of 100,000 documents. Generated, not taken from the machine: a 4x corpus of distinct text
    does not exist here, and repeated text would make duplicates nobody planted."""
    if directory.exists() and any(directory.iterdir()):
        return directory
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocabulary = np.array(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(50_000)])
    cdf = np.cumsum(1 / np.arange(1, len(vocabulary) + 1))
    cdf /= cdf[-1]
    lengths = rng.integers(40, 81, n)
    words = vocabulary[np.minimum(np.searchsorted(cdf, rng.random(int(lengths.sum()))), len(cdf) - 1)]
    ends = np.cumsum(lengths)
    copy = (rng.random(n) < 0.3) & (np.arange(n) > 10)
    texts: list[str] = []
    for k in range(n):
        if copy[k]:
            edited = texts[int(rng.integers(0, k))].split(" ")
            edited[int(rng.integers(0, len(edited)))] = str(words[int(rng.integers(0, len(words)))])
            texts.append(" ".join(edited))
        else:
            texts.append(" ".join(words[ends[k] - lengths[k] : ends[k]]))
    for start in range(0, n, 100_000):
        lines = (json.dumps({"id": f"d{start + i}", "text": t}) for i, t in enumerate(texts[start : start + 100_000]))
        (directory / f"part-{start // 100_000:03d}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def refinery_graph(corpus: Path, out: Path, workers: int, rounds: bool) -> dict:
    """The ``minhash_dedup`` job on ``corpus``; ``rounds``: cluster in rounds of shuffles even when one task
    would do (the driver reads ``pipeline.dedup.ONE_TASK_EDGES``). Seconds, peak RSS, and ``graph.json``."""
    import pipeline.dedup

    saved = pipeline.dedup.ONE_TASK_EDGES
    pipeline.dedup.ONE_TASK_EDGES = 0 if rounds else saved
    try:
        report = refinery_minhash(corpus, out, workers)
    finally:
        pipeline.dedup.ONE_TASK_EDGES = saved
    return {**report, **json.loads((out / "dedup" / "graph.json").read_text())}


def graph_report(n: int, workers: int, scratch: Path) -> dict:
    """The short-document corpus and its 2x and 4x versions, clustered in rounds (and the 1x in one task): peak
    RSS at three sizes shows whether a worker's memory follows the corpus."""
    one = short_documents(HERE / "data" / f"short-{n}", n)
    two = short_documents(HERE / "data" / f"short-{2 * n}", 2 * n, seed=13)
    four = short_documents(HERE / "data" / f"short-{4 * n}", 4 * n, seed=12)
    runs = {
        "1x_one_task": refinery_graph(one, scratch / "g1", workers, rounds=False),
        "1x_rounds": refinery_graph(one, scratch / "g1r", workers, rounds=True),
        "2x_rounds": refinery_graph(two, scratch / "g2r", workers, rounds=True),
        "4x_rounds": refinery_graph(four, scratch / "g4r", workers, rounds=True),
    }
    for run in runs.values():
        run["seconds"] = round(run["seconds"], 1)
        run["peak_rss_mb_per_worker"] = round(run["peak_rss_mb_per_worker"])
    ratio = runs["4x_rounds"]["seconds"] / runs["1x_rounds"]["seconds"]
    return {"documents_1x": n, **runs, "time_ratio_4x_rounds": round(ratio, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--short-docs", type=int, default=1_000_000, help="documents of the graph corpus (1x)")
    parser.add_argument("--graph-only", action="store_true", help="only the short-document graph runs")
    args = parser.parse_args()
    if args.graph_only:
        shutil.rmtree(HERE / "results" / "scratch-graph", ignore_errors=True)  # a killed run's outputs would resume
        report = graph_report(args.short_docs, args.workers, HERE / "results" / "scratch-graph")
        shutil.rmtree(HERE / "results" / "scratch-graph", ignore_errors=True)
        print(json.dumps(report, indent=1))
        (HERE / "results" / "dedup-graph.json").write_text(json.dumps(report, indent=1))
        return
    base, big = corpora(args.size_mb)
    _, mb = text_mb(base)
    _, big_mb = text_mb(big)
    scratch = HERE / "results" / "scratch-dedup"
    shutil.rmtree(scratch, ignore_errors=True)
    dt_seconds, dt_removed = datatrove_minhash(base, scratch / "datatrove", args.workers)
    ours = refinery_minhash(base, scratch / "ours-1x", args.workers)
    ours4 = refinery_minhash(big, scratch / "ours-4x", args.workers)
    graph = graph_report(args.short_docs, args.workers, scratch / "graph")
    shutil.rmtree(scratch, ignore_errors=True)
    report = {
        "corpus_mb": round(mb, 1),
        "corpus_4x_mb": round(big_mb, 1),
        "workers": args.workers,
        "datatrove_mb_s": round(mb / dt_seconds, 2),
        "refinery_mb_s": round(mb / ours["seconds"], 2),
        "refinery_vs_datatrove": round(dt_seconds / ours["seconds"], 2),
        "datatrove_removed": dt_removed,
        "refinery_near_duplicates": ours["near_duplicates"],
        "refinery_4x_mb_s": round(big_mb / ours4["seconds"], 2),
        "time_ratio_4x_data": round(ours4["seconds"] / ours["seconds"], 2),
        "peak_rss_mb_per_worker_1x": round(ours["peak_rss_mb_per_worker"]),
        "peak_rss_mb_per_worker_4x": round(ours4["peak_rss_mb_per_worker"]),
        "graph": graph,
    }
    for key, value in report.items():
        print(f"{key:>28}: {value}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "dedup.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

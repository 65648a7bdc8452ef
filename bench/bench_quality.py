"""Quality filtering: Refinery's ``quality`` stage vs datatrove's four filters, same corpus, one process.

datatrove runs JsonlReader → GopherRepetitionFilter → GopherQualityFilter → C4QualityFilter →
FineWebQualityFilter → JsonlWriter with LocalPipelineExecutor; Refinery runs ingest → quality → OUT/docs on Dask.
Same worker count; words are split by spaCy in datatrove and by Refinery's Arrow rules here.

    python bench/bench_quality.py [--corpus prose|code] [--size-mb 16] [--workers 2] [--repeats 3]

Each side is the best of ``--repeats`` runs (Refinery's each on a fresh cluster), then one run on a warm cluster.

``prose`` (the default; these rules are made for prose) is the agreement test's corpus: package READMEs,
licences and metadata from the environment and the Python reference manual, about 6 MB, written twice over
(as different documents, in different files). ``code`` is the Python-source corpus of the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from distributed import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenize import text_mb
from corpus import build, warm_up_corpus

from pipeline.cluster import local_cluster
from pipeline.runner import JobHooks, run_workflow
from schemas.spec import WorkflowSpec, parse_spec

HERE = Path(__file__).resolve().parent


def datatrove_filters(corpus: Path, out: Path, workers: int) -> float:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    pipeline = [
        JsonlReader(str(corpus)),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(),
        FineWebQualityFilter(),
        JsonlWriter(str(out / "kept")),
    ]
    files = len(list(corpus.glob("*.jsonl")))
    start = time.perf_counter()
    LocalPipelineExecutor(pipeline, tasks=files, workers=workers, logging_dir=str(out / "logs")).run()
    return time.perf_counter() - start


class PhaseClock:
    """The seconds of each phase of a job (the runner's phases: each segment, the global step, the dropped-text
    sample and the commit after it), from its progress hook."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def __call__(self, snapshot: dict) -> None:
        label = (snapshot.get("phase") or "").split(":")[0]
        if label and (not self.marks or self.marks[-1][0] != label):
            self.marks.append((label, time.perf_counter()))

    def seconds(self, start: float, end: float) -> dict[str, float]:
        times = [start, *(t for _, t in self.marks[1:]), end] if self.marks else [start, end]
        labels = [label for label, _ in self.marks] or ["job"]
        return {label: round(b - a, 3) for label, a, b in zip(labels, times, times[1:], strict=False)}


def best_of(repeats: int, run: Callable[[Path], float], out: Path) -> float:
    """The fastest of ``repeats`` runs, each into a directory of its own: single runs of a few seconds vary by up to
    ±8% here, so both sides of a ratio are the best of the same number of runs."""
    return min(run(out / f"run-{k}") for k in range(repeats))


def fresh_then_warm(
    spec: Callable[[Path, Path], WorkflowSpec],
    corpus: Path,
    out: Path,
    workers: int,
    phases: dict | None = None,
    repeats: int = 1,
) -> tuple[float, float, dict]:
    """Seconds of ``spec(input, output)`` over ``corpus`` on a fresh cluster (workers import the stage modules and
    load the tokenizer and word rules; the best of ``repeats``, each on a cluster of its own), and on a warm one:
    another fresh cluster that first ran the same job on text of its own (:func:`corpus.warm_up_corpus`), so its
    caches hold none of the measured text. Also the first run's funnel; ``phases`` receives the seconds of each
    phase of the fastest fresh run."""
    runs = []
    for k in range(repeats):
        clock = PhaseClock()
        with local_cluster(workers) as cluster, Client(cluster):  # as `refinery run` starts it
            start = time.perf_counter()
            result = run_workflow(spec(corpus, out / f"cold-{k}"), scheduler=cluster.scheduler_address,
                                  show_progress=False, hooks=JobHooks(on_progress=clock))  # fmt: skip
            seconds = time.perf_counter() - start
        runs.append((seconds, clock.seconds(start, start + seconds), result.manifest.funnel.model_dump()))
    cold, fastest, funnel = min(runs, key=lambda run: run[0])
    if phases is not None:
        phases.update(fastest)
    with local_cluster(workers) as cluster, Client(cluster):
        warm_up = spec(warm_up_corpus(out / "warm-up-input"), out / "warm-up")  # small splits: every worker
        warm_up.input.partition_bytes = 32 * 2**10  # runs every stage once
        run_workflow(warm_up, scheduler=cluster.scheduler_address, show_progress=False)
        start = time.perf_counter()
        run_workflow(spec(corpus, out / "warm"), scheduler=cluster.scheduler_address, show_progress=False)
        return cold, time.perf_counter() - start, funnel


def refinery_quality(corpus: Path, out: Path, workers: int, repeats: int = 1) -> tuple[float, float, dict]:
    def spec(source: Path, target: Path) -> WorkflowSpec:
        return parse_spec({"name": "bench-quality", "input": {"url": str(source)}, "output": {"url": str(target)},
                           "stages": [{"stage": "quality"}]})  # fmt: skip

    return fresh_then_warm(spec, corpus, out, workers, repeats=repeats)


def speed_report(mb: float, workers: int, datatrove: float, cold: float, warm: float, funnel: dict) -> dict:
    """MB/s of datatrove and of Refinery on a fresh and a warm cluster, the ratios, and what Refinery kept."""
    return {
        "corpus_mb": round(mb, 1),
        "workers": workers,
        "datatrove_mb_s": round(mb / datatrove, 3),
        "refinery_mb_s": round(mb / cold, 2),
        "refinery_vs_datatrove": round(datatrove / cold, 2),
        "refinery_warm_mb_s": round(mb / warm, 2),
        "refinery_warm_vs_datatrove": round(datatrove / warm, 2),
        "refinery_kept": funnel["kept"],
        "refinery_dropped": sum(funnel["dropped"].values()),
    }


def prose_corpus(directory: Path) -> Path:
    sys.path.insert(0, str(HERE.parent))
    from tests.quality_corpus import prose_documents

    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.iterdir()):
        docs = prose_documents(10_000)
        for copy in range(2):
            for part in range(4):
                lines = [json.dumps({"id": f"{copy}-{part}-{i}", "text": t}) for i, t in enumerate(docs[part::4])]
                (directory / f"part-{copy}{part}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["prose", "code"], default="prose")
    parser.add_argument("--size-mb", type=int, default=16, help="size of the code corpus")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs on each side")
    args = parser.parse_args()
    if args.corpus == "prose":
        corpus = prose_corpus(HERE / "data" / "prose")
    else:
        corpus = build(HERE / "data" / f"text-{args.size_mb}mb", args.size_mb)
    _, mb = text_mb(corpus)
    scratch = HERE / "results" / "scratch-quality"
    shutil.rmtree(scratch, ignore_errors=True)
    dt = best_of(args.repeats, lambda out: datatrove_filters(corpus, out, args.workers), scratch / "datatrove")
    ours, warm, funnel = refinery_quality(corpus, scratch / "ours", args.workers, args.repeats)
    shutil.rmtree(scratch, ignore_errors=True)
    report = {"corpus": args.corpus, **speed_report(mb, args.workers, dt, ours, warm, funnel)}
    for key, value in report.items():
        print(f"{key:>24}: {value}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"quality-{args.corpus}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

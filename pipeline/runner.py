"""Run a workflow spec on Dask: plan the splits, run each segment on every split with the global steps
between them, commit the job.

A ``LocalCluster`` of processes (one per core) is the default; ``scheduler`` points the same graph at a running
cluster. Finished splits leave a completion marker (and each segment its state), so rerunning an interrupted job
skips what is done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask
from dask.utils import format_bytes
from distributed import Client, KilledWorker, get_worker

from pipeline.cluster import OneTokenizerThread, ReleaseFreedMemory, WarmUp, local_cluster
from pipeline.dedup import compute_decisions, load_decisions
from pipeline.dropped import cap_dropped, dropped_capped
from pipeline.partition import PartitionPlan
from pipeline.planner import number_lines, plan_partitions
from pipeline.progress import JobProgress
from pipeline.segments import Segment, run_segment, segment_done, segments_of
from pipeline.training import blend_shares, megatron_blend, usage, write_datatrove_weights, write_megatron_args
from pipeline.waiting import as_finished
from schemas.manifest import Funnel, Manifest, PartitionReport, mix_shares
from schemas.spec import DOCUMENT_FORMATS, PACKED_FORMATS, WorkflowSpec
from stages.tokenize import tokenizer_identity
from storage.fs import (
    StorageError,
    check_real_location,
    exists,
    filesystem,
    is_local,
    join,
    read_bytes,
    remove_temporaries,
    remove_tree,
    write_bytes_atomic,
)
from storage.manifest import write_cluster_table, write_manifest


class JobConflictError(RuntimeError):
    """The output directory holds a different job; refusing to mix their files."""


@dataclass(frozen=True)
class JobResult:
    output: str
    manifest: Manifest
    skipped_partitions: int


def resolved_output(spec: WorkflowSpec, confined: bool = False) -> WorkflowSpec:
    """The spec with a local output resolved (symlinks followed once, here): every write below it then refuses a
    symbolic link, which can only have been planted (``storage.fs.check_real_location``). A ``confined`` (service)
    job's output was resolved when it was submitted, so any difference now is a planted link: refused."""
    fs, _ = filesystem(spec.output.url)
    if not is_local(fs) or "://" in spec.output.url:
        return spec
    url = os.path.realpath(spec.output.url)
    if confined and url != os.path.abspath(spec.output.url):
        raise StorageError(f"output {spec.output.url!r} has been replaced by a symbolic link; refusing to write")
    return spec.model_copy(update={"output": spec.output.model_copy(update={"url": url})})


class WorkerDiedError(RuntimeError):
    """A worker died while running a task (in practice: it ran out of memory); the job stops at once."""


@contextmanager
def dask_client(scheduler: str | None, workers: int | None, worker_memory: str | None = None) -> Iterator[Client]:
    """A client of ``scheduler``, or of a local cluster of ``workers`` processes with ``worker_memory`` each
    (Dask's "auto": the machine's memory shared out). A task whose worker dies is not retried on the local
    cluster: with bounded batches a death means the budget is too small, and a retry would die the same way."""
    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            client.register_plugin(ReleaseFreedMemory())
            client.register_plugin(OneTokenizerThread())
            yield client
        return
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        local_cluster(workers, worker_memory) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(ReleaseFreedMemory())
        client.register_plugin(OneTokenizerThread())
        yield client


def _describe(plan: PartitionPlan) -> str:
    if plan.byte_range is not None:
        return f"{plan.sources[0]} bytes {plan.byte_range[0]}-{plan.byte_range[1]}"
    if plan.row_groups is not None:
        return f"{plan.sources[0]} row groups {plan.row_groups[0]}-{plan.row_groups[1] - 1}"
    if len(plan.sources) == 1:
        return f"{plan.sources[0]} (whole file)"
    return f"{len(plan.sources)} files from {plan.sources[0]} to {plan.sources[-1]}"


def _budget(client: Client) -> str:
    """The workers' memory limits, read while they are alive (a dead worker no longer reports its own)."""
    limits = {w.get("memory_limit") for w in client.scheduler_info().get("workers", {}).values()}
    return ", ".join(sorted(format_bytes(x) for x in limits if x)) or "none set"


def _worker_died(spec: WorkflowSpec, plan: PartitionPlan, budget: str) -> WorkerDiedError:
    shard = spec.output.shard_sequences * spec.pack.seq_len * 4 if spec.pack else 0
    held = f"; a shard being written holds up to {format_bytes(shard)} (output.shard_sequences)" if shard else ""
    return WorkerDiedError(
        f"{plan.name} ({_describe(plan)}) was running on a worker that died, most likely out of memory "
        f"(memory budget per worker: {budget}{held}). Lower input.batch_bytes (now "
        f"{format_bytes(spec.input.batch_bytes)}) or give each worker more memory (refinery run --worker-memory, "
        "fewer --workers); the changed job needs a new output location."
    )


def _claim_output(spec: WorkflowSpec, n_partitions: int) -> None:
    job_url = join(spec.output.url, "_job.json")
    record = {"name": spec.name, "fingerprint": spec.fingerprint(), "partitions": n_partitions}
    check_real_location(job_url)
    if exists(job_url):
        try:
            previous = json.loads(read_bytes(job_url, real=True))
        except ValueError:
            raise JobConflictError(f"{job_url} is not a job record; choose a new output location") from None
        if previous.get("fingerprint") != record["fingerprint"] or previous.get("partitions") != n_partitions:
            raise JobConflictError(
                f"{spec.output.url} holds another job ({previous.get('name')}, fingerprint "
                f"{previous.get('fingerprint')}); a resumed job must have the same spec and input. "
                "Choose a new output location."
            )
        remove_temporaries(spec.output.url)
        return
    write_bytes_atomic(job_url, json.dumps(record, indent=1).encode())


@dataclass
class JobHooks:
    """How a caller (the service) watches and steers a job: progress and cancellation."""

    on_progress: Callable[[dict[str, Any]], None] | None = None
    cancelled: Callable[[], bool] | None = None
    #: Local data roots of a service job: no input is opened whose real location lies outside them.
    roots: tuple[str, ...] = ()


def run_workflow(
    spec: WorkflowSpec,
    scheduler: str | None = None,
    workers: int | None = None,
    show_progress: bool = True,
    hooks: JobHooks | None = None,
    worker_memory: str | None = None,
) -> JobResult:
    """Plan the splits, run each segment on every split (a barrier between segments), commit the job."""
    hooks = hooks or JobHooks()
    spec = resolved_output(spec, confined=bool(hooks.roots))
    plans = plan_partitions(spec, hooks.roots)
    _claim_output(spec, len(plans))
    segments = segments_of(spec)
    terminal = segments[-1]
    finished = {p.index for p in plans if segment_done(spec, terminal, p)}
    if len(finished) < len(plans) or not dropped_capped(spec):
        steps = ["read", *(s.stage for s in spec.stages), "write"]
        total = sum(sum(p.sizes) for p in plans)
        with (
            dask_client(scheduler, workers, worker_memory) as client,
            JobProgress(spec.name, steps, total, show_progress, hooks.on_progress) as progress,
        ):
            plans = number_lines(client, spec, plans, hooks.cancelled)
            warm_up: WarmUp | None = None
            for k, segment in enumerate(segments):
                if segment.barrier:
                    _global_step(client, spec, segment, plans, hooks, progress, warm_up)
                pending = [p for p in plans if p.index not in finished and not segment_done(spec, segment, p)]
                for plan in plans:  # what a resumed job finished before counts as done
                    if plan not in pending:
                        for step in segment.steps:
                            progress.advance(step, sum(plan.sizes))
                warm_up = WarmUp(client, segments[k + 1].stages) if k + 1 < len(segments) else None
                progress.set_phase(f"segment {k + 1} of {len(segments)}: {', '.join(segment.steps)}")
                _run_segment(client, spec, segment, pending, progress, hooks, warm_up)
            reports = [_report(spec, p) for p in plans]
            progress.set_phase("dropped text: the job-wide sample")
            cap_dropped(client, spec, plans, [r.dropped for r in reports], hooks.cancelled)
    else:
        reports = [_report(spec, p) for p in plans]
    manifest = commit_job(spec, reports)
    return JobResult(spec.output.url, manifest, len(finished))


def _global_step(
    client: Client,
    spec: WorkflowSpec,
    segment: Segment,
    plans: list[PartitionPlan],
    hooks: JobHooks,
    progress: JobProgress,
    warm_up: WarmUp | None,
) -> None:
    budget = _budget(client)
    try:
        compute_decisions(client, spec, segment, plans, hooks.cancelled, progress.set_phase, warm_up)
    except KilledWorker:
        step = "+".join(s.stage for s in segment.barrier)
        raise WorkerDiedError(
            f"the {step} step was running on a worker that died, most likely out of memory (memory budget per "
            f"worker: {budget}; the step holds the keys of up to 125,000 documents a task, about 0.6 GB). Give each "
            "worker more memory (refinery run --worker-memory, fewer --workers); a rerun to the same output "
            "location resumes after the segments already done."
        ) from None


def _report(spec: WorkflowSpec, plan: PartitionPlan) -> PartitionReport:
    marker = join(spec.output.url, "_markers", f"{plan.name}.json")
    return PartitionReport.model_validate_json(read_bytes(marker, real=True))


PROGRESS_TOPIC = "refinery-progress"


def report_batch(step: str, partition: int, nbytes: int) -> None:
    """Runs on a worker: tell the client that ``step`` finished a batch of ``nbytes`` stored input bytes."""
    get_worker().log_event(PROGRESS_TOPIC, {"step": step, "partition": partition, "bytes": nbytes})


def _run_segment(
    client: Client,
    spec: WorkflowSpec,
    segment: Segment,
    plans: list[PartitionPlan],
    progress: JobProgress,
    hooks: JobHooks,
    warm_up: WarmUp | None = None,
) -> None:
    """One coarse task per split; progress arrives as worker events while the tasks run. At the segment's tail,
    workers left with nothing to run start readying for the next step and segment (``warm_up``)."""
    if not plans:
        return
    prefix = spec.task_prefix()
    by_key: dict[str, PartitionPlan] = {}
    budget = _budget(client)

    def on_event(event: tuple[float, dict]) -> None:
        message = event[1]
        progress.advance(message["step"], int(message.get("bytes", 0)))

    client.subscribe_topic(PROGRESS_TOPIC, on_event)
    try:
        decisions = partial(load_decisions, spec, segment.index) if segment.barrier else None
        futures = []
        for plan in plans:
            key = f"segment-{prefix}-{segment.index}-{plan.index}"
            by_key[key] = plan
            futures.append(
                client.submit(run_segment, plan, spec, segment.index, decisions, report_batch, key=key, retries=0)
            )
        running = len(futures)
        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        for future in as_finished(client, futures, hooks.cancelled, spec.name):
            running -= 1
            # Nothing queued: a worker without a task stays idle until the segment ends (the last to finish starts
            # with the step).
            if warm_up is not None and 0 < running < workers:
                warm_up.start_on(w for w, keys in client.processing().items() if not keys)
            if future.status == "error":
                error = future.exception()
                if isinstance(error, KilledWorker):
                    raise _worker_died(spec, by_key[future.key], budget) from None
                error.add_note(f"(raised by Dask task {future.key}: {_describe(by_key[future.key])})")
                raise error
    finally:
        client.unsubscribe_topic(PROGRESS_TOPIC)


def commit_job(spec: WorkflowSpec, reports: list[PartitionReport]) -> Manifest:
    """Write funnel, manifest (JSON and Parquet) and ``_SUCCESS``, in that order."""
    funnel = Funnel.from_reports(reports)
    if not funnel.balanced:
        raise AssertionError(f"funnel does not balance: {funnel}")
    pack = spec.pack
    documents = [d for r in reports for d in r.documents]
    shards = [s for r in reports for s in r.shards]
    blend = spec.mix is not None and spec.mix.apply == "blend"
    tokens = {fmt: sum(d.tokens for d in documents if d.format == fmt) for fmt in DOCUMENT_FORMATS}
    tokens.update({fmt: sum(s.tokens for s in shards) for fmt in PACKED_FORMATS})
    manifest = Manifest(
        name=spec.name,
        fingerprint=spec.fingerprint(),
        seq_len=pack.seq_len if pack else None,
        pack_mode=pack.mode if pack else None,
        shard_formats=list(spec.output.shard_formats),
        shards=shards,
        funnel=funnel,
        mix=blend_shares(spec, documents) if blend else mix_shares(reports),
        documents=documents,
        tokens={fmt: n for fmt, n in tokens.items() if fmt in spec.output.shard_formats and pack is not None},
        tokenizer=tokenizer_identity(spec.tokenizer, pack) if spec.tokenizer and pack else None,
        blend=megatron_blend(spec, documents),
    )
    manifest.usage = usage(spec, manifest)
    # A task killed mid-write (a lost worker) leaves its temporary file; the rerun committed the real one.
    remove_temporaries(spec.output.url)
    remove_tree(join(spec.output.url, "_work"))  # the segments' per-batch parts and states
    if spec.exact_dedup or spec.minhash_dedup:
        write_cluster_table(spec.output.url, [r.partition for r in reports])
    # The spec without its name and locations (two runs of one spec to two places write the same bytes): what the
    # rules' thresholds and the input's fields were, for the explorer and the report.
    settings = spec.model_dump(mode="json", exclude={"name": True, "input": {"url"}, "output": {"url"}})
    write_bytes_atomic(join(spec.output.url, "spec.json"), json.dumps(settings, indent=1, sort_keys=True).encode())
    write_megatron_args(spec, manifest)
    write_datatrove_weights(spec, manifest)
    write_manifest(spec.output.url, manifest)
    return manifest

"""Run a workflow spec on Dask: plan partitions, submit one task per partition and step, commit the job.

A ``LocalCluster`` of processes (one per core) is the default; ``scheduler`` points the same graph at a running
cluster. Finished partitions leave a completion marker, so rerunning an interrupted job skips them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from distributed import Client, LocalCluster, get_worker
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.dedup import compute_decisions, load_decisions
from pipeline.partition import PartitionPlan, process_partition
from pipeline.planner import number_lines, plan_partitions
from pipeline.waiting import as_finished
from schemas.manifest import Funnel, Manifest, PartitionReport, mix_shares
from schemas.spec import WorkflowSpec
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


@contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Client]:
    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


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


def _finished(spec: WorkflowSpec, plan: PartitionPlan) -> PartitionReport | None:
    marker = join(spec.output.url, "_markers", f"{plan.name}.json")
    if not exists(marker):
        return None
    try:  # read_bytes(real=True): no link at the marker or on its way
        return PartitionReport.model_validate_json(read_bytes(marker, real=True))
    except ValidationError:  # a damaged marker: the partition is done again (its content is never echoed)
        return None


@dataclass
class JobHooks:
    """How a caller (the service) watches and steers a job: per-step progress and cancellation."""

    on_progress: Callable[[dict[str, int], int], None] | None = None
    cancelled: Callable[[], bool] | None = None
    #: Local data roots of a service job: no input is opened whose real location lies outside them.
    roots: tuple[str, ...] = ()


def run_workflow(
    spec: WorkflowSpec,
    scheduler: str | None = None,
    workers: int | None = None,
    show_progress: bool = True,
    hooks: JobHooks | None = None,
) -> JobResult:
    hooks = hooks or JobHooks()
    spec = resolved_output(spec, confined=bool(hooks.roots))
    plans = plan_partitions(spec, hooks.roots)
    _claim_output(spec, len(plans))
    reports: dict[int, PartitionReport] = {}
    pending: list[PartitionPlan] = []
    for plan in plans:
        done = _finished(spec, plan)
        if done is None:
            pending.append(plan)
        else:
            reports[plan.index] = done
    skipped = len(reports)
    if pending:
        with dask_client(scheduler, workers) as client:
            plans = number_lines(client, spec, plans, hooks.cancelled)
            pending = [plans[p.index] for p in pending]
            if spec.exact_dedup or spec.minhash_dedup:
                with Console(stderr=True).status("global dedup step: keys, shuffles, clusters", spinner="dots"):
                    compute_decisions(client, spec, plans, hooks.cancelled)
            reports.update(_run_partitions(client, spec, pending, show_progress, hooks))
    ordered = [reports[p.index] for p in plans]
    manifest = commit_job(spec, ordered)
    return JobResult(spec.output.url, manifest, skipped)


PROGRESS_TOPIC = "refinery-progress"


def report_step(step: str, partition: int) -> None:
    """Runs on a worker: tell the client that ``step`` of ``partition`` is done (Dask's event topics)."""
    get_worker().log_event(PROGRESS_TOPIC, {"step": step, "partition": partition})


def _run_partitions(
    client: Client, spec: WorkflowSpec, plans: list[PartitionPlan], show_progress: bool, hooks: JobHooks
) -> dict[int, PartitionReport]:
    """One coarse task per partition; per-stage progress arrives as worker events while tasks run."""
    fingerprint = spec.task_prefix()
    steps = ["read", *(s.stage for s in spec.stages), "write"]
    reports: dict[int, PartitionReport] = {}
    columns = [TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=not show_progress) as progress:
        bars = {step: progress.add_task(step, total=len(plans)) for step in steps}
        seen: set[tuple[str, int]] = set()  # a task rerun after a worker died reports its steps again

        done: dict[str, int] = dict.fromkeys(steps, 0)

        def advance(step: str) -> None:
            progress.advance(bars[step])
            done[step] += 1
            if hooks.on_progress:
                hooks.on_progress(dict(done), len(plans))

        def on_event(event: tuple[float, dict]) -> None:
            message = event[1]
            key = (message["step"], message["partition"])
            if key not in seen and message["step"] in bars:
                seen.add(key)
                advance(message["step"])

        client.subscribe_topic(PROGRESS_TOPIC, on_event)
        try:
            decisions = partial(load_decisions, spec) if spec.exact_dedup or spec.minhash_dedup else None
            futures = [
                client.submit(
                    process_partition, plan, spec, report_step, decisions, key=f"partition-{fingerprint}-{plan.index}"
                )
                for plan in plans
            ]
            for future in as_finished(client, futures, hooks.cancelled, spec.name):
                if future.status == "error":
                    error = future.exception()
                    error.add_note(f"(raised by Dask task {future.key})")
                    raise error
                report = future.result()
                reports[report.partition] = report
                for step in steps:  # events may trail the result; the bars end complete either way
                    if (step, report.partition) not in seen:
                        seen.add((step, report.partition))
                        advance(step)
        finally:
            client.unsubscribe_topic(PROGRESS_TOPIC)
    return reports


def commit_job(spec: WorkflowSpec, reports: list[PartitionReport]) -> Manifest:
    """Write funnel, manifest (JSON and Parquet) and ``_SUCCESS``, in that order."""
    funnel = Funnel.from_reports(reports)
    if not funnel.balanced:
        raise AssertionError(f"funnel does not balance: {funnel}")
    pack = spec.pack
    manifest = Manifest(
        name=spec.name,
        fingerprint=spec.fingerprint(),
        seq_len=pack.seq_len if pack else None,
        pack_mode=pack.mode if pack else None,
        shard_formats=list(spec.output.shard_formats),
        shards=[s for r in reports for s in r.shards],
        funnel=funnel,
        mix=mix_shares(reports),
    )
    # A task killed mid-write (a lost worker) leaves its temporary file; the rerun committed the real one.
    remove_temporaries(spec.output.url)
    remove_tree(join(spec.output.url, "_work"))  # the partitions' states before the global step
    if spec.exact_dedup or spec.minhash_dedup:
        write_cluster_table(spec.output.url, [r.partition for r in reports])
    write_manifest(spec.output.url, manifest)
    return manifest

"""Global deduplication on Dask: keys per partition, candidate edges, their verification, clusters, decisions.

Nothing is collected on the driver and no step gathers the corpus: exact hashes and LSH band keys are shuffled
by key into candidate edges, each candidate meets its two signatures in joins, and the verified graph's connected
components come from rounds of shuffles (``pipeline.components``). A graph of at most ``ONE_TASK_EDGES`` edges
(bounded, whatever the corpus) is clustered in one task instead: the rounds' scheduling would cost more than the
work. Each partition's decisions are written by the task holding them; the partition tasks apply them.
A step whose shuffles are one partition each (at most ``DOCUMENTS_PER_PARTITION`` documents) runs as one task
that computes the same frames with Dask's synchronous scheduler (``pipeline.frame_runs``).
See ``pipeline.dedup_graph`` for the frames.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import dask
import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask import delayed
from distributed import Client

from pipeline.cluster import WarmUp
from pipeline.components import connected_components
from pipeline.dedup_graph import (
    LABELS_META,
    decisions,
    exact_candidates,
    near_candidates,
    verified,
)
from pipeline.dedup_keys import INDEX_PARTITION_BASE, KeysPart, index_rows
from pipeline.frame_runs import FrameRun, InThisThread, Kept, OnCluster
from pipeline.partition import PartitionPlan
from pipeline.segments import Segment, SegmentState, barrier_configs, work_url
from pipeline.waiting import gather_cancellable
from schemas.spec import WorkflowSpec
from schemas.stages import MinHashDedupConfig
from stages.components import components_in_memory
from storage.dedup_index import DedupIndexError, commit_index, index_parts, part_name, write_index_part
from storage.fs import exists, join, read_bytes, remove_tree, write_bytes_atomic
from storage.parts import part_url

#: Verified edges one task may cluster (about 100 MB of pairs and labels): above, rounds of shuffles on Dask.
ONE_TASK_EDGES = 2_000_000

DECISIONS_SCHEMA = pa.schema(
    [
        ("order", pa.int64()),
        ("cluster", pa.int64()),
        ("reason", pa.string()),
        ("similarity", pa.float32()),
        ("kept_id", pa.string()),
    ]
)


def decisions_url(spec: WorkflowSpec, segment: int, partition: int) -> str:
    """Decisions of the barrier before ``segment`` for one partition (``dedup/_decisions/`` for the first)."""
    where = "_decisions" if segment <= 1 else f"_decisions-{segment}"
    return join(spec.output.url, "dedup", where, f"part-{partition:05d}.parquet")


def keys_parts(spec: WorkflowSpec, segment: Segment, plans: list[PartitionPlan]) -> tuple[list[KeysPart], int]:
    """The keys files of the segment before ``segment`` (listed from each split's state), and how many
    documents they hold."""
    parts, documents = [], 0
    for plan in plans:
        work = work_url(spec, segment.index - 1, plan)
        state = SegmentState.load(join(work, "state.json"))
        parts += [KeysPart(plan.index, part_url(work, "keys", n)) for n, b in enumerate(state.batches) if b["keys"]]
        documents += state.kept
    return parts, documents


def _write_index_part(part: KeysPart, spec: WorkflowSpec, segment: int, exact: bool, staging: str, name: str) -> int:
    decided = load_decisions(spec, segment, part.partition)
    dropped = decided.filter(pc.is_valid(decided.column("reason"))).column("order").combine_chunks()
    table = index_rows(part, exact, dropped)
    write_index_part(staging, name, table)
    return table.num_rows


def _copy_index_part(url: str, staging: str) -> int:
    data = read_bytes(url, real=True)
    write_bytes_atomic(join(staging, part_name(url)), data)
    return pq.read_metadata(pa.BufferReader(data)).num_rows


def _write_decisions(decided: pd.DataFrame, spec: WorkflowSpec, segment: int) -> pd.DataFrame:
    """Write the decisions file of each partition in ``decided`` (a shuffle put each partition's members in one
    task); returns the partitions written. Members of an earlier job's index (negative partitions) have none."""
    written = []
    for partition, rows in decided.groupby("partition", sort=True):
        if partition < 0:
            continue
        table = pa.Table.from_pandas(rows.drop(columns=["partition"]), schema=DECISIONS_SCHEMA, preserve_index=False)
        table = table.replace_schema_metadata()  # pandas' dtypes differ by path (P2P or not), the values do not
        _write_table(table.sort_by("order"), decisions_url(spec, segment, int(partition)))
        written.append(int(partition))
    return pd.DataFrame({"partition": pd.Series(written, dtype="int64")})


def _write_table(table: pa.Table, url: str) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(url, sink.getvalue().to_pybytes())


def _write_empty_decisions(spec: WorkflowSpec, segment: int, partitions: list[int]) -> int:
    for partition in partitions:
        _write_table(DECISIONS_SCHEMA.empty_table(), decisions_url(spec, segment, partition))
    return len(partitions)


def compute_decisions(
    client: Client,
    spec: WorkflowSpec,
    segment: Segment,
    plans: list[PartitionPlan],
    cancelled: Callable[[], bool] | None = None,
    on_phase: Callable[[str], None] | None = None,
    warm_up: WarmUp | None = None,
) -> None:
    """Run the barrier before ``segment`` and write one decisions file per partition, then a success marker.
    ``on_phase(text)`` hears each sub-step (keys read, shuffles and clusters, decisions written); ``warm_up``
    readies the workers for the step and for ``segment`` as the step starts."""
    done = join(posixpath.dirname(decisions_url(spec, segment.index, 0)), "_SUCCESS")
    if exists(done) and read_bytes(done, real=True).decode() == spec.fingerprint():
        return
    # Signatures travel as bytes; Dask must not turn object columns into (UTF-8) strings.
    with dask.config.set({"dataframe.convert-string": False}):
        _compute_decisions(client, spec, segment, plans, cancelled, on_phase or _ignore, warm_up)
    write_bytes_atomic(done, spec.fingerprint().encode())


#: Documents per partition of the step's shuffles: their band rows (14 per document, 16 bytes each) make about
#: 28 MB, their signatures 56 MB. Measured on 1M and 4M short documents (2 workers, peak RSS per worker, before
#: the step kept its frames in files): 250,000 gave 1.17 and 1.47 GB, 125,000 0.86 and 1.09 GB for 7% more time at
#: 4M; 62,500 0.89 GB at 4M for 23% more (see the README). The count depends on the input only, so the step's
#: files are the same on any cluster (and its answers on any partitioning: every step is a function of sets).
DOCUMENTS_PER_PARTITION = 125_000
#: A step whose shuffles make this many partitions runs as one task, its frames computed by Dask's synchronous
#: scheduler with task-based shuffles: its 300-odd tasks of milliseconds cost 1.0-1.7 s of scheduling on the
#: cluster, more than their work, and its memory is bounded by ``DOCUMENTS_PER_PARTITION`` either way. Wider steps
#: run on the cluster with P2P shuffles, which stage the shuffled rows on the workers' disks: a task-based shuffle
#: may hold every piece of its input in memory at once, so a worker's memory would follow the corpus (and P2P's
#: fixed cost, about 0.3 s a shuffle, is small next to their work).
ONE_TASK_PARTITIONS = 1


def shuffle_partitions(documents: int) -> int:
    return max(1, -(-documents // DOCUMENTS_PER_PARTITION))


#: More documents than any index holds (10^12): a larger count in ``_INDEX.json`` is not one Refinery wrote.
MAX_INDEX_DOCUMENTS = 10**12


def _index_documents(minhash: MinHashDedupConfig | None) -> int:
    """Documents of the earlier job's index this step deduplicates against (its ``_INDEX.json`` says; the count
    sizes the step's partitions, so a value that is not a count is refused)."""
    if minhash is None or not minhash.index:
        return 0
    documents = json.loads(read_bytes(join(minhash.index, "_INDEX.json"), real=True)).get("documents", 0)
    if not isinstance(documents, int) or isinstance(documents, bool) or not 0 <= documents <= MAX_INDEX_DOCUMENTS:
        raise DedupIndexError(f"dedup index {minhash.index!r}: _INDEX.json's documents is not a document count")
    return documents


def _ignore(_: object) -> None:
    pass


def _compute_decisions(
    client: Client,
    spec: WorkflowSpec,
    segment: Segment,
    plans: list[PartitionPlan],
    cancelled: Callable[[], bool] | None,
    on_phase: Callable[[str], None],
    warm_up: WarmUp | None,
) -> None:
    step = "+".join(s.stage for s in segment.barrier)
    _, minhash = barrier_configs(segment.barrier)
    parts, documents = keys_parts(spec, segment, plans)
    old_urls = index_parts(minhash.index, minhash) if minhash is not None and minhash.index else []
    old = [KeysPart(INDEX_PARTITION_BASE + k, url, index=True) for k, url in enumerate(old_urls)]
    what = f"{spec.name} (dedup step)"
    if not parts and not old:  # no document reached the barrier (an empty corpus, or earlier stages dropped all)
        empty = [plan.index for plan in plans]
        gather_cancellable(client, [client.submit(_write_empty_decisions, spec, segment.index, empty)], cancelled, what)
        write_bytes_atomic(join(spec.output.url, "dedup", _graph_file(segment.index)), _GraphStats().dump())
        if minhash is not None:
            staging = join(spec.output.url, "dedup", "_index-staging")
            commit_index(staging, join(spec.output.url, "dedup", "index"), minhash, 0)
        on_phase(f"{step}: no document reached the step")
        return
    width = shuffle_partitions(documents + _index_documents(minhash))
    keys = _StepKeys(parts, old, width)
    if width <= ONE_TASK_PARTITIONS:
        on_phase(f"{step}: {documents} documents, every shuffle one partition: the step runs as one task")
        workers = list(client.scheduler_info(n_workers=-1)["workers"])
        # a place, not a requirement: with no worker at this moment (a cluster scaled to zero, restarting workers)
        # the task waits for one, as any other
        place = {"workers": [warm_up.step_worker(workers) if warm_up is not None else min(workers)],
                 "allow_other_workers": True} if workers else {}  # fmt: skip
        task = client.submit(_decide_in_one_task, spec, segment, plans, keys, ONE_TASK_EDGES, pure=False, **place)
        if warm_up is not None:
            warm_up.start_on(workers)
        for text in gather_cancellable(client, [task], cancelled, what)[0]:
            on_phase(text)  # the sub-steps the task went through, heard once it is done
        return
    if warm_up is not None:
        warm_up.start_on(client.scheduler_info(n_workers=-1)["workers"])
    # The frames kept between the step's phases, in a directory of this run's own: a second run started on the
    # same output (the CLI locks nothing) must not delete the files this one reads. An interrupted run's stays
    # until the job commits, which removes all of ``OUT/_work/``.
    scratch = join(spec.output.url, "_work", f"dedup-{segment.index}-{uuid.uuid4().hex[:12]}")
    try:
        with dask.config.set({"dataframe.shuffle.method": "p2p"}):
            run = OnCluster(client, scratch, cancelled, what)
            _decide_in_frames(run, spec, segment, plans, keys, ONE_TASK_EDGES, on_phase)
    finally:
        remove_tree(scratch)


def _decide_in_one_task(
    spec: WorkflowSpec, segment: Segment, plans: list[PartitionPlan], keys: _StepKeys, one_task_edges: int
) -> list[str]:
    """Runs on a worker: the step's frames computed here by Dask's synchronous scheduler
    (``pipeline.frame_runs.InThisThread``). Returns the text of each sub-step it went through."""
    phases: list[str] = []
    settings = {"dataframe.convert-string": False, "dataframe.shuffle.method": "tasks", "scheduler": "sync"}
    with dask.config.set(settings):
        _decide_in_frames(InThisThread(), spec, segment, plans, keys, one_task_edges, phases.append)
    return phases


@dataclass(frozen=True)
class _StepKeys:
    """The keys files of a step: this job's batches, the earlier index's parts, and the partitions of every
    shuffle."""

    own: list[KeysPart]
    old: list[KeysPart]
    width: int

    @property
    def parts(self) -> list[KeysPart]:
        return self.own + self.old


def _decide_in_frames(
    run: FrameRun,
    spec: WorkflowSpec,
    segment: Segment,
    plans: list[PartitionPlan],
    keys: _StepKeys,
    one_task_edges: int,
    on_phase: Callable[[str], None],
) -> None:
    step = "+".join(s.stage for s in segment.barrier)
    exact, minhash = barrier_configs(segment.barrier)
    parts, width = keys.parts, keys.width
    stats = _GraphStats(step_in_one_task=isinstance(run, InThisThread))
    on_phase(f"{step}: candidate pairs from the keys of {len(parts)} batches")
    graph = _verified_graph(run, parts, exact is not None, minhash, width, stats)
    on_phase(f"{step}: {stats.candidates} candidate pairs, {stats.edges} verified; clustering")
    on_round = lambda r, t: on_phase(f"{step}: components, round {r} ({t:.1f} s)")  # noqa: E731
    labels = _components(run, graph, width, stats, one_task_edges, on_round)
    decided = decisions(run, labels, graph, parts, minhash is not None, width)
    written = decided.shuffle("partition", npartitions=width).map_partitions(
        _write_decisions, spec, segment.index, meta=pd.DataFrame({"partition": pd.Series(dtype="int64")})
    )
    done = set(run.compute([written])[0]["partition"].tolist())
    empty = [plan.index for plan in plans if plan.index not in done]
    run.compute([delayed(_write_empty_decisions)(spec, segment.index, empty)])
    write_bytes_atomic(join(spec.output.url, "dedup", _graph_file(segment.index)), stats.dump())
    if minhash is None:
        on_phase(f"{step}: decisions written for {len(plans)} partitions")
        return
    staging = join(spec.output.url, "dedup", "_index-staging")
    writes = [
        delayed(_write_index_part)(part, spec, segment.index, exact is not None, staging,
                                   f"{spec.fingerprint()}-part-{k:05d}.parquet")
        for k, part in enumerate(keys.own)
    ]  # fmt: skip
    writes += [delayed(_copy_index_part)(part.url, staging) for part in keys.old]
    counts = run.compute(writes)
    commit_index(staging, join(spec.output.url, "dedup", "index"), minhash, sum(counts))
    on_phase(f"{step}: decisions written for {len(plans)} partitions, index of {sum(counts)} documents")


@dataclass
class _GraphStats:
    """``OUT/dedup/graph.json``: the size of the duplicate graph and what clustering it cost. ``one_task``: the
    components were found in one task (a graph of at most ``ONE_TASK_EDGES`` edges), not in rounds of shuffles;
    ``step_in_one_task``: the whole step ran as one task (every shuffle one partition)."""

    candidates: int = 0
    edges: int = 0
    rounds: int = 0
    round_seconds: tuple[float, ...] = ()
    one_task: bool = True
    step_in_one_task: bool = False

    def dump(self) -> bytes:
        record = {"candidate_pairs": self.candidates, "verified_edges": self.edges, "one_task": self.one_task,
                  "step_in_one_task": self.step_in_one_task, "rounds": self.rounds,
                  "round_seconds": [round(t, 3) for t in self.round_seconds]}  # fmt: skip
        return json.dumps(record, indent=1).encode()


def _graph_file(segment: int) -> str:
    return "graph.json" if segment <= 1 else f"graph-{segment}.json"


def _verified_graph(
    run: FrameRun,
    parts: list[KeysPart],
    exact: bool,
    minhash: MinHashDedupConfig | None,
    width: int,
    stats: _GraphStats,
) -> dd.DataFrame:
    """The verified edges, kept by ``run`` (a row per duplicate pair). The signatures they are verified with are
    read from the keys files by the join, never held: they are the size of the corpus."""
    pieces: list[Kept] = []
    if exact:
        pieces.append(run.keep(exact_candidates(parts, width), "exact-edges"))
        stats.candidates += pieces[-1].rows
    if minhash is not None:
        candidates = run.keep(near_candidates(parts, minhash, width), "near-candidates")
        stats.candidates += candidates.rows
        pieces.append(run.keep(verified(run, candidates.frame, parts, minhash.threshold, width), "near-edges"))
    stats.edges = sum(p.rows for p in pieces)
    return dd.concat([p.frame for p in pieces]) if len(pieces) > 1 else pieces[0].frame


def _components(
    run: FrameRun,
    graph: dd.DataFrame,
    width: int,
    stats: _GraphStats,
    one_task_edges: int,
    on_round: Callable[[int, float], None],
) -> dd.DataFrame:
    edges = graph[["a", "b"]].rename(columns={"a": "u", "b": "v"})
    if stats.edges <= one_task_edges:  # bounded by the constant, not by the corpus
        together = delayed(pd.concat)(edges.to_delayed())
        return dd.from_delayed([delayed(components_in_memory)(together)], meta=LABELS_META, verify_meta=False)
    labels, rounds = connected_components(run, edges, width, on_round)
    stats.one_task, stats.rounds, stats.round_seconds = False, len(rounds.seconds), tuple(rounds.seconds)
    return labels


def load_decisions(spec: WorkflowSpec, segment: int, partition: int) -> pa.Table:
    data = read_bytes(decisions_url(spec, segment, partition), real=True)
    return pq.read_table(pa.BufferReader(data), schema=DECISIONS_SCHEMA)

"""One partition's path from raw files to committed shards: read, each stage in order, write.

``process_partition`` is the single, coarse Dask task per partition (no intermediate tables cross the
scheduler). It is a plain function of picklable values, so Dask can rerun it after a worker dies; every file it
writes is committed atomically, so a rerun overwrites with identical bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.document import DROP_REASON, N_TOKENS, TOKEN_IDS
from schemas.manifest import PartitionReport
from schemas.spec import InputSpec, OutputSpec, WorkflowSpec
from schemas.stages import GLOBAL_STAGES, PackConfig, RlSetConfig, StageBase
from stages import stage_function
from stages.dedup import apply_decisions
from stages.mix import MIX_BUCKET, MIX_COPIES
from stages.rl_set import rl_rows
from storage.fs import exists, join, local_refusal, read_bytes, write_bytes_atomic
from storage.readers import (
    concat_batches,
    read_file,
    read_jsonl,
    read_line_range,
    read_parquet_row_groups,
    refused_files,
)
from storage.shards import write_shard

#: Columns of a document batch that are too big for ``OUT/docs/``; every other column is a tag and is kept.
HEAVY_COLUMNS = {"text", TOKEN_IDS, DROP_REASON, "loss_mask", "reasoning", "answer", "prompt_text"}


#: The format of the partition that holds the input files a job refuses to open (each becomes a quarantine record).
REFUSED = "refused"


@dataclass(frozen=True)
class PartitionPlan:
    index: int
    sources: tuple[str, ...]
    format: str
    #: Local data roots that confine a service job (checked again when the worker opens each file).
    roots: tuple[str, ...] = ()
    #: For a REFUSED partition: why each source is not read.
    reasons: tuple[str, ...] = ()
    #: Part of one uncompressed line-based file: the records starting in ``[start, end)`` of its bytes.
    byte_range: tuple[int, int] | None = None
    #: Part of one Parquet file: row groups ``[first, last)``.
    row_groups: tuple[int, int] | None = None
    #: Line (row) number of the partition's first record in its file.
    first_line: int = 1

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"


@dataclass
class PartitionState:
    """A partition between tasks: the documents still kept, the records of dropped ones, and counters."""

    plan: PartitionPlan
    documents: pa.Table
    quarantine: pa.Table
    n_input: int
    records: list[pa.Table] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    sequences: pa.Table | None = None
    rl_rows: pa.Table | None = None


def doc_records(table: pa.Table, status: pa.Array | str, stage: str | None) -> pa.Table:
    """Rows for ``OUT/docs/``: provenance, size, fate, and every tag column a stage added."""
    n = table.num_rows
    columns = {
        "id": table.column("id"),
        "source": table.column("source"),
        "line": table.column("line"),
        "n_chars": pc.utf8_length(table.column("text")).cast(pa.int64()),
        "n_tokens": table.column(N_TOKENS) if N_TOKENS in table.column_names else pa.nulls(n, pa.int64()),
        "status": pa.array([status] * n, pa.string()) if isinstance(status, str) else status,
        "stage": pa.array([stage] * n, pa.string()),
    }
    for name in table.column_names:
        if name not in HEAVY_COLUMNS and name not in columns:
            columns[name] = table.column(name)
    return pa.table(columns)


def local_refusal_of(source: str, roots: tuple[str, ...]) -> str | None:
    return None if "://" in source else local_refusal(source, roots)


def read_partition(plan: PartitionPlan, config: InputSpec) -> PartitionState:
    whole = plan.byte_range is None and plan.row_groups is None
    refusal = None if whole or plan.format == REFUSED else local_refusal_of(plan.sources[0], plan.roots)
    if plan.format == REFUSED:
        batch = refused_files(plan.sources, plan.reasons)
    elif refusal is not None:  # checked again on the worker: the file may have changed since planning
        batch = refused_files(plan.sources, (refusal,))
    elif plan.byte_range is not None:
        data = read_line_range(plan.sources[0], *plan.byte_range, max_tail=config.max_doc_bytes + 1)
        batch = read_jsonl(plan.sources[0], data, None, config, plan.first_line)
    elif plan.row_groups is not None:
        batch = read_parquet_row_groups(plan.sources[0], plan.row_groups, config, plan.first_line)
    else:
        batch = concat_batches(read_file(source, plan.format, config, plan.roots) for source in plan.sources)
    return PartitionState(plan, batch.documents, batch.quarantine, batch.n_input)


def run_stage(state: PartitionState, config: StageBase) -> PartitionState:
    name = config.stage  # type: ignore[attr-defined]
    result = stage_function(name)(state.documents, config)
    if isinstance(config, PackConfig):
        return replace(state, sequences=result)
    state = split_dropped(state, result, name)
    if isinstance(config, RlSetConfig):
        return replace(state, rl_rows=rl_rows(state.documents, config))
    return state


def apply_dedup(state: PartitionState, decisions: pa.Table) -> PartitionState:
    """Apply the global dedup step's decisions for this partition (computed by ``pipeline.dedup``)."""
    return split_dropped(state, apply_decisions(state.documents, decisions, state.plan.index, "dedup"), "dedup")


def split_dropped(state: PartitionState, result: pa.Table, name: str) -> PartitionState:
    """Move the rows a stage marked with ``drop_reason`` to the doc records, counting each reason."""
    if DROP_REASON not in result.column_names:
        return replace(state, documents=result)
    reasons = result.column(DROP_REASON)
    dropped = pc.is_valid(reasons)
    gone = result.filter(dropped)
    counts = Counter(state.dropped)
    counts.update(gone.column(DROP_REASON).to_pylist())
    records = [*state.records, doc_records(gone, gone.column(DROP_REASON), name)]
    kept = result.filter(pc.invert(dropped)).drop_columns([DROP_REASON])
    return replace(state, documents=kept, records=records, dropped=counts)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_partition(state: PartitionState, output: OutputSpec) -> PartitionReport:
    """Commit shards, docs and quarantine of one partition, then its completion marker (last)."""
    plan, out = state.plan, output.url
    shards = []
    if state.sequences is not None:
        seqs = state.sequences
        for k, start in enumerate(range(0, seqs.num_rows, output.shard_sequences)):
            chunk = seqs.slice(start, output.shard_sequences)
            name = f"{plan.name}-{k:04d}"
            shards.append(write_shard(join(out, "shards"), name, plan.index, chunk, output.shard_formats))
    records = pa.concat_tables([*state.records, doc_records(state.documents, "kept", None)], promote_options="default")
    write_bytes_atomic(join(out, "docs", f"{plan.name}.parquet"), _parquet_bytes(records))
    write_bytes_atomic(join(out, "quarantine", f"{plan.name}.parquet"), _parquet_bytes(state.quarantine))
    if state.rl_rows is not None:
        write_bytes_atomic(join(out, "rl", f"{plan.name}.parquet"), _parquet_bytes(state.rl_rows))
    tokens = state.documents.column(N_TOKENS) if N_TOKENS in state.documents.column_names else None
    mix_tokens: dict[str, int] = {}
    if tokens is not None and MIX_BUCKET in state.documents.column_names:
        weighted = pc.multiply(tokens, state.documents.column(MIX_COPIES))
        grouped = pa.table({"bucket": state.documents.column(MIX_BUCKET), "tokens": weighted})
        for row in grouped.group_by("bucket").aggregate([("tokens", "sum")]).to_pylist():
            mix_tokens[row["bucket"]] = int(row["tokens_sum"] or 0)
    report = PartitionReport(
        partition=plan.index,
        sources=list(plan.sources),
        input=state.n_input,
        kept=state.documents.num_rows,
        dropped=dict(sorted(state.dropped.items())),
        quarantined=dict(sorted(Counter(state.quarantine.column("reason").to_pylist()).items())),
        tokens=int(pc.sum(tokens).as_py() or 0) if tokens is not None else 0,
        shards=shards,
        mix_tokens=dict(sorted(mix_tokens.items())),
    )
    marker = json.dumps(report.model_dump(mode="json"), indent=1, sort_keys=True).encode()
    write_bytes_atomic(join(out, "_markers", f"{plan.name}.json"), marker)
    return report


def intermediate_url(spec: WorkflowSpec, plan: PartitionPlan) -> str:
    """Where a partition's state before the global step is kept (on the output's own filesystem, so it works on
    ``s3://`` and across machines); removed when the job commits."""
    return join(spec.output.url, "_work", "before-dedup", plan.name)


def save_state(state: PartitionState, url: str) -> None:
    """Keep a partition's state (surviving documents with every tag, quarantine, records of dropped documents and
    counters) so that the stages before the global step run once: the dedup keys and the partition task share it."""
    write_bytes_atomic(join(url, "documents.parquet"), _parquet_bytes(state.documents))
    write_bytes_atomic(join(url, "quarantine.parquet"), _parquet_bytes(state.quarantine))
    if state.records:
        records = pa.concat_tables(state.records, promote_options="default")
        write_bytes_atomic(join(url, "records.parquet"), _parquet_bytes(records))
    counters = {"n_input": state.n_input, "dropped": dict(state.dropped), "records": bool(state.records)}
    write_bytes_atomic(join(url, "state.json"), json.dumps(counters, sort_keys=True).encode())  # written last


def load_state(plan: PartitionPlan, url: str) -> PartitionState | None:
    """The state :func:`save_state` kept, or None when it is not (completely) there."""
    if not exists(join(url, "state.json")):
        return None
    counters = json.loads(read_bytes(join(url, "state.json"), real=True))

    def table(name: str) -> pa.Table:
        return pq.read_table(pa.BufferReader(read_bytes(join(url, name), real=True)))

    records = [table("records.parquet")] if counters["records"] else []
    return PartitionState(plan, table("documents.parquet"), table("quarantine.parquet"), counters["n_input"],
                          records, Counter(counters["dropped"]))  # fmt: skip


def before_dedup(plan: PartitionPlan, spec: WorkflowSpec) -> PartitionState:
    """A partition read and taken through the stages before the global step (the dedup keys are computed from
    this state, which is kept for the partition task)."""
    state = read_partition(plan, spec.input)
    for stage in spec.stages_before_dedup:
        state = run_stage(state, stage)
    save_state(state, intermediate_url(spec, plan))
    return state


def process_partition(
    plan: PartitionPlan,
    spec: WorkflowSpec,
    on_step: Callable[[str, int], None] | None = None,
    decisions: Callable[[int], pa.Table] | None = None,
) -> PartitionReport:
    """Read, run every stage, write; ``on_step(step, partition)`` is told after each step (progress).

    With a global step, the stages before it already ran when the dedup keys were computed: the partition starts
    from that kept state (or recomputes it if it is gone), applies ``decisions(partition)``, the global step's
    verdicts, and runs the rest of the chain.
    """
    kept = intermediate_url(spec, plan) if decisions is not None else None
    state = load_state(plan, kept) if kept is not None else None
    done_before = len(spec.stages_before_dedup) if state is not None else 0
    if state is None:
        state = read_partition(plan, spec.input)
    if on_step:
        on_step("read", plan.index)
    deduplicated = False
    for position, stage in enumerate(spec.stages):
        if position < done_before:
            pass  # ran once already, before the global step
        elif stage.stage not in GLOBAL_STAGES:
            state = run_stage(state, stage)
        elif not deduplicated:
            if decisions is None:
                raise ValueError("a spec with dedup stages needs the global step's decisions")
            state = apply_dedup(state, decisions(plan.index))
            deduplicated = True
        if on_step:
            on_step(stage.stage, plan.index)
    report = write_partition(state, spec.output)
    if on_step:
        on_step("write", plan.index)
    return report

"""Segments: the runs of per-batch stages between global steps, and the task that runs one on one split.

A workflow is ``segment 0 → barrier 1 → segment 1 → … → terminal segment``. A barrier is a run of global stages
(exact and/or MinHash dedup); ``pipeline.dedup`` decides it from the keys the segment before it wrote.

A segment task streams its split batch by batch (memory follows ``input.batch_bytes``, never the file):

    batches (raw files, or the previous segment's kept documents) → the barrier's decisions → stages → parts

A non-terminal segment writes, per batch, the kept documents with all their tags and the next barrier's keys
under ``OUT/_work/seg-K/part-XXXXX/`` (the output's own filesystem, so it works on ``s3://`` and across machines)
and ``state.json`` last. The terminal segment packs, cuts shards and writes RL rows as batches arrive, merges the
per-batch doc records of every segment into ``OUT/docs/``, and writes the split's completion marker last.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dropped import dropped_rows, lowest_per_reason, merge_split
from pipeline.partition import REFUSED, PartitionPlan, doc_records
from schemas.document import DOCUMENT_SCHEMA, DROP_REASON, N_TOKENS, QUARANTINE_SCHEMA
from schemas.manifest import PartitionReport
from schemas.spec import PACKED_FORMATS, WorkflowSpec
from schemas.stages import GLOBAL_STAGES, ExactDedupConfig, MinHashDedupConfig, PackConfig, RlSetConfig, StageBase
from stages import stage_function
from stages.dedup import apply_decisions, exact_keys, minhash_keys, order_keys
from stages.mix import MIX_BUCKET, MIX_COPIES
from stages.pack import Packer, finish, frame_documents
from stages.rl_set import VERL_SCHEMA, rl_rows
from storage.documents import DocumentShards
from storage.fs import confined_to, exists, join, local_refusal, read_bytes, write_bytes_atomic
from storage.parts import merge_parts, part_url, read_part, write_part
from storage.readers import RawBatch, refused_files
from storage.shards import ShardWriter
from storage.streams import coalesce, iter_compressed_jsonl, iter_file, iter_line_range, iter_parquet

KEYS_SCHEMA = pa.schema(
    [("order", pa.int64()), ("high", pa.uint64()), ("low", pa.uint64()), ("sig", pa.binary()),
     ("id", pa.string()), ("source", pa.string())]
)  # fmt: skip


@dataclass(frozen=True)
class Segment:
    index: int
    #: Global stages applied first (their decisions); empty for segment 0.
    barrier: tuple[StageBase, ...]
    stages: tuple[StageBase, ...]
    #: Global stages of the next barrier: this segment writes their keys. Empty for the terminal segment.
    next_barrier: tuple[StageBase, ...]

    @property
    def terminal(self) -> bool:
        return not self.next_barrier

    @property
    def steps(self) -> list[str]:
        """The progress steps this segment advances."""
        head = ["read"] if self.index == 0 else [s.stage for s in self.barrier]
        return [*head, *(s.stage for s in self.stages), *(["write"] if self.terminal else [])]

    @property
    def barrier_name(self) -> str:
        """Prefix of the columns the barrier adds (``dedup_cluster``; ``dedup2_cluster`` for a second one)."""
        return "dedup" if self.index <= 1 else f"dedup{self.index}"


def segments_of(spec: WorkflowSpec) -> list[Segment]:
    """Cut the stage list at its global stages; adjacent global stages form one barrier."""
    runs: list[tuple[list[StageBase], list[StageBase]]] = [([], [])]  # (barrier, stages)
    previous_global = False
    for stage in spec.stages:
        is_global = stage.stage in GLOBAL_STAGES
        if is_global and not previous_global:
            runs.append(([], []))
        runs[-1][0 if is_global else 1].append(stage)
        previous_global = is_global
    return [
        Segment(k, tuple(barrier), tuple(stages), tuple(runs[k + 1][0]) if k + 1 < len(runs) else ())
        for k, (barrier, stages) in enumerate(runs)
    ]


def barrier_configs(stages: tuple[StageBase, ...]) -> tuple[ExactDedupConfig | None, MinHashDedupConfig | None]:
    exact = next((s for s in stages if isinstance(s, ExactDedupConfig)), None)
    minhash = next((s for s in stages if isinstance(s, MinHashDedupConfig)), None)
    return exact, minhash


def work_url(spec: WorkflowSpec, segment: int, plan: PartitionPlan) -> str:
    return join(spec.output.url, "_work", f"seg-{segment}", plan.name)


@dataclass
class SegmentState:
    """What a segment task did to a split, kept as ``state.json``: counters, and per batch the stored input bytes
    it stands for and which part files it wrote."""

    n_input: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    kept: int = 0
    batches: list[dict[str, object]] = field(default_factory=list)

    def dump(self) -> bytes:
        record = {"n_input": self.n_input, "dropped": dict(sorted(self.dropped.items())), "kept": self.kept,
                  "quarantined": dict(sorted(self.quarantined.items())), "batches": self.batches}  # fmt: skip
        return json.dumps(record, sort_keys=True).encode()

    @classmethod
    def load(cls, url: str) -> SegmentState:
        record = json.loads(read_bytes(url, real=True))
        return cls(record["n_input"], Counter(record["dropped"]), Counter(record["quarantined"]), record["kept"],
                   record["batches"])  # fmt: skip


def segment_done(spec: WorkflowSpec, segment: Segment, plan: PartitionPlan) -> bool:
    if segment.terminal:
        return exists(join(spec.output.url, "_markers", f"{plan.name}.json"))
    return exists(join(work_url(spec, segment.index, plan), "state.json"))


def split_batches(plan: PartitionPlan, spec: WorkflowSpec) -> Iterator[RawBatch]:
    """The raw batches of a split, each of about ``input.batch_bytes`` of text."""
    cfg, size = spec.input, spec.input.batch_bytes
    if plan.format == REFUSED:
        yield refused_files(plan.sources, plan.reasons)
    elif plan.byte_range is not None:
        yield from _checked(
            plan, lambda: iter_line_range(plan.sources[0], *plan.byte_range, plan.first_line, cfg, size)
        )
    elif plan.text_range is not None:
        yield from _checked(plan, lambda: iter_compressed_jsonl(plan.sources[0], plan.stream_bytes, cfg, size,
                                                                plan.text_range, plan.sizes[0]))  # fmt: skip
    elif plan.row_groups is not None:
        stored = plan.sizes[0] if plan.sizes else 0
        yield from _checked(plan, lambda: iter_parquet(plan.sources[0], plan.row_groups, plan.first_line, stored,
                                                       cfg, size))  # fmt: skip
    else:
        sizes = plan.sizes or (0,) * len(plan.sources)
        files = (iter_file(s, plan.format, n, cfg, size, plan.roots) for s, n in zip(plan.sources, sizes, strict=True))
        yield from coalesce((batch for batches in files for batch in batches), size)


def _checked(plan: PartitionPlan, batches: Callable[[], Iterator[RawBatch]]) -> Iterator[RawBatch]:
    """A part of a file is checked again on the worker (it may have changed since planning)."""
    source = plan.sources[0]
    why = None if "://" in source else local_refusal(source, plan.roots)
    if why is not None:
        batch = refused_files((source,), (why,))
        batch.consumed = sum(plan.sizes)
        yield batch
        return
    yield from batches()


def _previous_batches(spec: WorkflowSpec, segment: Segment, plan: PartitionPlan) -> Iterator[RawBatch]:
    """The documents the previous segment kept, batch by batch, as it wrote them."""
    previous = work_url(spec, segment.index - 1, plan)
    state = SegmentState.load(join(previous, "state.json"))
    for number, batch in enumerate(state.batches):
        documents = read_part(part_url(previous, "docs", number)) if batch["docs"] else DOCUMENT_SCHEMA.empty_table()
        yield RawBatch(documents, QUARANTINE_SCHEMA.empty_table(), 0, int(batch["consumed"]))


def run_segment(
    plan: PartitionPlan,
    spec: WorkflowSpec,
    index: int,
    decisions: Callable[[int], pa.Table] | None = None,
    on_batch: Callable[[str, int, int], None] | None = None,
) -> PartitionReport | SegmentState:
    """Run segment ``index`` of ``spec`` on one split. ``decisions(split)`` gives the barrier's verdicts;
    ``on_batch(step, split, stored_bytes)`` is told as each step finishes a batch (progress). Returns the split's
    report (terminal segment) or its state. A service job's files are opened only inside its data roots."""
    with confined_to(plan.roots):
        return _run_segment(plan, spec, index, decisions, on_batch)


def _run_segment(
    plan: PartitionPlan,
    spec: WorkflowSpec,
    index: int,
    decisions: Callable[[int], pa.Table] | None,
    on_batch: Callable[[str, int, int], None] | None,
) -> PartitionReport | SegmentState:
    segment = segments_of(spec)[index]
    work = work_url(spec, index, plan)
    state = SegmentState()
    verdicts = decisions(plan.index) if segment.barrier and decisions is not None else None
    if segment.barrier and verdicts is None:
        raise ValueError("a segment after a global step needs that step's decisions")
    terminal = _Terminal(spec, plan, index) if segment.terminal else None
    rows_in = rows_out = 0
    batches = split_batches(plan, spec) if index == 0 else _previous_batches(spec, segment, plan)
    for number, raw in enumerate(batches):
        state.n_input += raw.n_input
        state.quarantined.update(raw.quarantine.column("reason").to_pylist())
        step = "read" if index == 0 else ""
        if on_batch and step:
            on_batch(step, plan.index, raw.consumed)
        documents, records, dropped = raw.documents, [], ([] if spec.output.dropped_text != "none" else None)
        if verdicts is not None:
            n = documents.num_rows
            documents = apply_decisions(documents, verdicts, plan.index, segment.barrier_name, start=rows_in)
            rows_in += n
            documents = _split_dropped(documents, segment.barrier_name, state, records, dropped)
            for stage in segment.barrier:
                if on_batch:
                    on_batch(stage.stage, plan.index, raw.consumed)
        for stage in segment.stages:
            if isinstance(stage, PackConfig):
                terminal.pack(documents)
            else:
                result = stage_function(stage.stage)(documents, stage)
                documents = _split_dropped(result, stage.stage, state, records, dropped)
                if isinstance(stage, RlSetConfig):
                    terminal.rl(rl_rows(documents, stage))
            if on_batch:
                on_batch(stage.stage, plan.index, raw.consumed)
        written = {"consumed": raw.consumed, "records": False, "quarantine": False, "docs": False, "keys": False,
                   "dropped": False}  # fmt: skip
        if terminal is not None:
            terminal.count(documents)
            records.append(doc_records(documents, "kept", None))
            state.kept += documents.num_rows
        else:
            written["keys"] = _write_keys(work, number, documents, segment, plan.index, rows_out)
            rows_out += documents.num_rows
            write_part(part_url(work, "docs", number), documents)
            written["docs"] = True
            state.kept += documents.num_rows
        if records:
            write_part(part_url(work, "records", number), pa.concat_tables(records, promote_options="default"))
            written["records"] = True
        if dropped:
            rows = pa.concat_tables(dropped)
            cap = spec.output.dropped_sample if spec.output.dropped_text == "sample" else None
            write_part(part_url(work, "dropped", number), rows if cap is None else lowest_per_reason(rows, cap))
            written["dropped"] = True
        if raw.quarantine.num_rows:
            write_part(part_url(work, "quarantine", number), raw.quarantine)
            written["quarantine"] = True
        state.batches.append(written)
        if on_batch and terminal is not None:
            on_batch("write", plan.index, raw.consumed)
    if terminal is None:
        write_bytes_atomic(join(work, "state.json"), state.dump())  # last: the split's segment is done
        return state
    return terminal.commit(state, index)


def _split_dropped(
    result: pa.Table, name: str, state: SegmentState, records: list[pa.Table], dropped: list[pa.Table] | None
) -> pa.Table:
    """Move the rows a stage marked with ``drop_reason`` to the doc records (and their text to ``dropped`` when
    the output keeps it), counting each reason."""
    if DROP_REASON not in result.column_names:
        return result
    marked = pc.is_valid(result.column(DROP_REASON))
    gone = result.filter(marked)
    if gone.num_rows:
        state.dropped.update(gone.column(DROP_REASON).to_pylist())
        records.append(doc_records(gone, gone.column(DROP_REASON), name))
        if dropped is not None:
            dropped.append(dropped_rows(gone, gone.column(DROP_REASON), name))
    return result.filter(pc.invert(marked)).drop_columns([DROP_REASON])


def _write_keys(work: str, number: int, documents: pa.Table, segment: Segment, split: int, start: int) -> bool:
    """The next barrier's keys of this batch's kept documents: order key, exact hash, MinHash signature."""
    if not documents.num_rows:
        return False
    exact, minhash = barrier_configs(segment.next_barrier)
    n = documents.num_rows
    order = order_keys(split, n) + start
    high = low = pa.nulls(n, pa.uint64())
    sig = pa.nulls(n, pa.binary())
    if exact is not None:
        high, low = (pa.array(a) for a in exact_keys(documents, exact))
    if minhash is not None:
        sigs, _ = minhash_keys(documents, minhash, order)
        position = pc.index_in(pa.array(order), value_set=pa.array(sigs["order"].to_numpy()))
        sig = pc.take(pa.array(sigs["sig"].tolist(), pa.binary()), position)
    table = pa.table([pa.array(order), high, low, sig, documents.column("id"), documents.column("source")],
                     schema=KEYS_SCHEMA)  # fmt: skip
    write_part(part_url(work, "keys", number), table)
    return True


class _Terminal:
    """The outputs of the terminal segment of one split, written as batches arrive."""

    def __init__(self, spec: WorkflowSpec, plan: PartitionPlan, index: int) -> None:
        self.spec, self.plan = spec, plan
        self.work = work_url(spec, index, plan)
        out = spec.output
        pack = spec.pack
        packed = [f for f in out.shard_formats if f in PACKED_FORMATS]
        self.packer = Packer(pack) if pack is not None and pack.mode != "none" and packed else None
        self.shards = ShardWriter(join(out.url, "shards"), plan.name, plan.index, packed, out.shard_sequences)
        self.blend = spec.mix is not None and spec.mix.apply == "blend"
        self.documents = DocumentShards(out.url, plan.name, plan.index, list(out.shard_formats), spec.tokenizer or "")
        self.rl_parts = 0
        self.tokens = 0
        self.mix_tokens: Counter[str] = Counter()

    def pack(self, documents: pa.Table) -> None:
        """Lay a batch of tokenized documents out in every format: documents as they are (each mix bucket apart
        when the trainer applies the mix), and packed."""
        if self.documents.formats and documents.num_rows:
            buckets = documents.column(MIX_BUCKET) if self.blend and MIX_BUCKET in documents.column_names else None
            for bucket in sorted(pc.unique(buckets).to_pylist()) if buckets is not None else [None]:
                part = documents if bucket is None else documents.filter(pc.equal(buckets, bucket))
                self.documents.add(bucket, *frame_documents(part, self.spec.pack))
        if self.packer is not None:
            self.shards.add(self.packer.add(documents))

    def rl(self, rows: pa.Table) -> None:
        if rows.num_rows:
            write_part(part_url(self.work, "rl", self.rl_parts), rows)
            self.rl_parts += 1

    def count(self, documents: pa.Table) -> None:
        if N_TOKENS not in documents.column_names:
            return
        tokens = documents.column(N_TOKENS)
        self.tokens += int(pc.sum(tokens).as_py() or 0)
        if MIX_BUCKET in documents.column_names and documents.num_rows:
            weighted = pc.multiply(tokens, documents.column(MIX_COPIES))
            grouped = pa.table({"bucket": documents.column(MIX_BUCKET), "tokens": weighted})
            for row in grouped.group_by("bucket").aggregate([("tokens", "sum")]).to_pylist():
                self.mix_tokens[row["bucket"]] += int(row["tokens_sum"] or 0)

    def commit(self, state: SegmentState, index: int) -> PartitionReport:
        """Merge the per-batch parts of every segment into the split's files, then write its marker (last)."""
        spec, plan, out = self.spec, self.plan, self.spec.output.url
        if self.packer is not None:
            self.shards.add(finish(self.packer))
        shards = self.shards.close()
        documents = self.documents.close()
        states = [*(SegmentState.load(join(work_url(spec, k, plan), "state.json")) for k in range(index)), state]
        records = [part_url(work_url(spec, k, plan), "records", n) for k, s in enumerate(states)
                   for n, b in enumerate(s.batches) if b["records"]]  # fmt: skip
        quarantine = [part_url(work_url(spec, 0, plan), "quarantine", n)
                      for n, b in enumerate(states[0].batches) if b["quarantine"]]  # fmt: skip
        merge_parts(records, join(out, "docs", f"{plan.name}.parquet"), _EMPTY_RECORDS)
        merge_parts(quarantine, join(out, "quarantine", f"{plan.name}.parquet"), QUARANTINE_SCHEMA)
        if spec.output.dropped_text != "none":
            texts = [part_url(work_url(spec, k, plan), "dropped", n) for k, s in enumerate(states)
                     for n, b in enumerate(s.batches) if b.get("dropped")]  # fmt: skip
            cap = spec.output.dropped_sample if spec.output.dropped_text == "sample" else None
            merge_split(texts, join(out, "dropped", f"{plan.name}.parquet"), cap)
        if spec.stages and isinstance(spec.stages[-1], RlSetConfig):
            rl = [part_url(self.work, "rl", n) for n in range(self.rl_parts)]
            merge_parts(rl, join(out, "rl", f"{plan.name}.parquet"), VERL_SCHEMA)
        dropped = sum((s.dropped for s in states), Counter())
        report = PartitionReport(
            partition=plan.index,
            sources=list(plan.sources),
            input=states[0].n_input,
            kept=state.kept,
            dropped=dict(sorted(dropped.items())),
            quarantined=dict(sorted(states[0].quarantined.items())),
            tokens=self.tokens,
            shards=shards,
            documents=documents,
            mix_tokens=dict(sorted(self.mix_tokens.items())),
        )
        marker = json.dumps(report.model_dump(mode="json"), indent=1, sort_keys=True).encode()
        write_bytes_atomic(join(out, "_markers", f"{plan.name}.json"), marker)
        return report


_EMPTY_RECORDS = doc_records(DOCUMENT_SCHEMA.empty_table(), "kept", None).schema

"""``refinery`` command line: validate and run workflow specs.

Exit codes: 0 success, 1 the job failed, 2 the spec or the command line is wrong (nothing was run).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas.manifest import Manifest
from schemas.spec import PACKED_FORMATS, SpecError, WorkflowSpec, load_spec
from stages.mix import MixSelectorError
from storage.dedup_index import DedupIndexError
from storage.fs import StorageError
from storage.readers import UnknownFormatError

console = Console(stderr=True, soft_wrap=True)


def _spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="workflow YAML file")
    parser.add_argument("--input", help="override input.url (path, glob, directory or fsspec URL)")
    parser.add_argument("--output", help="override output.url")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any spec field by its dotted path, e.g. stages.1.seq_len=2048 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refinery", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check a workflow spec without running it")
    _spec_args(validate)
    run = commands.add_parser("run", help="run a workflow spec on Dask")
    _spec_args(run)
    run.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786")
    run.add_argument("--workers", type=int, help="worker processes of the local cluster (default: one per core)")
    run.add_argument(
        "--worker-memory",
        help="memory budget per local worker, e.g. 4GiB (default: the machine's memory shared out); a worker that "
        "passes it is restarted and the job stops with a message naming the partition",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars or progress log lines")
    report = commands.add_parser("report", help="write an HTML report (funnel, histograms, mix) of a job's output")
    report.add_argument("output", help="the job's output directory")
    report.add_argument("--to", help="where to write the HTML (default: OUTPUT/report.html)")
    serve = commands.add_parser("serve", help="start the HTTP service (FastAPI on uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    sql = commands.add_parser("sql", help="run a read-only DuckDB SELECT over a job's output")
    sql.add_argument("output", help="the job's output directory")
    sql.add_argument("query", help='e.g. "SELECT status, count(*) FROM docs GROUP BY status"')
    sql.add_argument("--limit", type=int, default=100, help="rows printed at most (default 100)")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table",
                     help="table (default), csv, or json (one object per line)")  # fmt: skip
    return parser


def _load(args: argparse.Namespace) -> WorkflowSpec:
    return load_spec(args.spec, args.overrides, args.input, args.output)


def print_funnel(manifest: Manifest, output: str) -> None:
    """The funnel, the tokens per format and how to train on the output. Names, keys and paths are user text:
    printed with markup off, so ``[red]`` in a bucket key or a path is shown as it is, never interpreted."""
    funnel = manifest.funnel
    table = Table(title=escape(f"funnel of {manifest.name}"), show_header=True)
    table.add_column("outcome")
    table.add_column("records", justify="right")
    table.add_row("input", f"{funnel.input:,}")
    table.add_row("kept", f"{funnel.kept:,}")
    for reason, count in funnel.dropped.items():
        table.add_row(escape(f"dropped: {reason}"), f"{count:,}")
    for reason, count in funnel.quarantined.items():
        table.add_row(escape(f"quarantined: {reason}"), f"{count:,}")
    out = Console()
    out.print(table)

    def say(line: str) -> None:
        out.print(line, markup=False, highlight=False, soft_wrap=True)

    for bucket, share in manifest.mix.items():
        say(f"mix bucket {bucket}: {share.tokens:,} tokens, {share.share:.1%} of what is trained on")
    say(f"tokens {funnel.tokens:,} (before BOS/EOS); output: {output}" if funnel.tokens else f"output: {output}")
    for fmt, tokens in manifest.tokens.items():
        if fmt in PACKED_FORMATS:
            shards = len(manifest.shards)
            say(f"  {fmt}: {tokens:,} tokens, {funnel.sequences:,} packed sequences ({funnel.padding:,} padding), "
                f"{shards} shard(s) under shards/")  # fmt: skip
        else:
            n = sum(1 for d in manifest.documents if d.format == fmt)
            say(f"  {fmt}: {tokens:,} tokens, one document per kept document, {n} shard(s) under {fmt}/")
    if manifest.usage:
        say(f"train on it:\n  export OUT={shlex.quote(output)}")
        for trainer, snippet in manifest.usage.items():
            say(f"  {trainer}: {snippet}")
        if "megatron" in manifest.usage and any(c.isspace() for c in output):
            say("  note: Megatron splits its data-args on whitespace, and this output's path has some: move or "
                "link the output to a path without before training with Megatron")  # fmt: skip


def _sql(args: argparse.Namespace) -> int:
    from storage.catalog import SqlRefused, SqlTimeout, connect, run_sql
    from storage.fs import exists

    try:
        found = exists(args.output)
    except (StorageError, OSError) as error:
        found, args.output = False, f"{args.output} ({error})"
    if not found:
        console.print(f"[red]error:[/red] no job output at {escape(args.output)}", highlight=False)
        return 2
    try:
        result = run_sql(connect({"job": args.output}, prefix=False), args.query, limit=args.limit)
    except (SqlRefused, SqlTimeout) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        return 2
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    elif args.format == "json":
        for row in result.rows:
            print(json.dumps(dict(zip(result.columns, row, strict=True)), default=str, ensure_ascii=False))
    else:  # cells are data, not markup: "[section]" must print as written
        table = Table(*(escape(c) for c in result.columns))
        for row in result.rows:
            table.add_row(*(escape(str(v)) for v in row))
        Console().print(table)
    if result.truncated:
        console.print(f"(first {args.limit} rows)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sql":
        return _sql(args)
    if args.command == "serve":
        import uvicorn

        from api.app import create_app

        try:
            app = create_app()
        except ValueError as error:
            console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
            return 2
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    if args.command == "report":
        from pipeline.report import write_report

        try:
            console.print(f"report: {write_report(args.output, args.to)}", markup=False)
        except (OSError, KeyError, ValueError) as error:
            console.print(f"[red]error:[/red] {escape(f'cannot report on {args.output}: {error}')}", highlight=False)
            return 2
        return 0
    try:
        spec = _load(args)
    except SpecError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        return 2
    if args.command == "validate":
        console.print(f"{args.spec}: valid ({len(spec.stages)} stages: {', '.join(s.stage for s in spec.stages)})",
                      markup=False)  # fmt: skip
        return 0
    from pipeline.runner import JobConflictError, WorkerDiedError, run_workflow
    from pipeline.training import BlendError

    try:
        result = run_workflow(
            spec, args.scheduler, args.workers, show_progress=not args.no_progress, worker_memory=args.worker_memory
        )
    except (StorageError, UnknownFormatError, JobConflictError, DedupIndexError, MixSelectorError, BlendError) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        return 2
    except WorkerDiedError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("interrupted: finished partitions are kept; run the same command again to resume")
        return 130
    print_funnel(result.manifest, result.output)
    return 0


def entry() -> None:
    """The ``refinery`` command: ``main``, then an exit that skips the interpreter's teardown.

    Everything the command does is finished and flushed by then (outputs committed, Dask cluster closed). Seen
    once in about ten suite runs: a ``refinery run`` that had printed its funnel aborted while the interpreter tore
    down native libraries' threads ("terminate called without an active exception", exit -6), turning a finished
    job into a failed command. In-process callers (tests) use ``main`` and keep the normal teardown."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()

"""The FastAPI app: jobs, datasets, shard samples and SQL; thin routes over the store, runner and catalog."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api.downloads import PARQUET, result_csv, result_parquet
from api.explore import add_explorer_routes
from api.models import ErrorBody, JobCreate, JobPublic, JobsPublic, SqlRequest, SqlResult
from api.placement import PlacementError, check_output_placement
from api.runner import JobRunner
from api.security import RequestGuard, check_token
from api.settings import Settings
from api.store import RESUMABLE, JobStore, OutputTaken
from pipeline.cluster import local_cluster
from schemas.paths import PathKind, PathRefused
from schemas.spec import SpecError, WorkflowSpec, parse_spec, set_dotted
from stages.tokenize import tokenizer_path
from storage.catalog import SqlRefused, SqlTimeout, connect, run_sql
from storage.explore import Explorer, load_settings
from storage.fs import StorageError, exists, join, open_input, read_bytes

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
ERRORS = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    413: {"model": ErrorBody},
}


def _sequence(row: dict[str, Any], tok: Any) -> dict[str, Any]:
    """One packed sequence of a shard: each document's token ids beside its decoded text."""
    bounds = row["cu_seqlens"]
    docs = []
    for doc_id, a, b in zip(row["doc_ids"], bounds[:-1], bounds[1:], strict=True):
        ids = row["input_ids"][a:b]
        docs.append({"doc_id": doc_id, "token_ids": ids, "text": tok.decode(ids, skip_special_tokens=False)})
    return {"n_pad": row["n_pad"], "cu_seqlens": bounds, "documents": docs}


def shard_rows(handle: Any, offset: int, n: int) -> tuple[list[dict[str, Any]], int]:
    """Rows ``offset`` to ``offset + n`` of a Parquet shard, reading only the row groups that hold them (a shard
    is hundreds of MB), and the shard's row count."""
    shard = pq.ParquetFile(handle)
    rows, start = [], 0
    for group in range(shard.num_row_groups):
        size = shard.metadata.row_group(group).num_rows
        if start + size > offset and len(rows) < n:
            table = shard.read_row_group(group)
            rows += table.slice(max(offset - start, 0), n - len(rows)).to_pylist()
        start += size
    return rows, shard.metadata.num_rows


def _real_file(url: str) -> bool:
    """A shard file as named: on the local disk a regular file reached through no link."""
    if "://" in url:
        return exists(url)
    path = Path(url)
    return path.is_file() and not path.is_symlink() and path.resolve() == path


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    store = JobStore(settings.state_db)
    interrupted = store.mark_interrupted()
    cluster = None
    scheduler = settings.scheduler
    if scheduler is None:  # one local cluster for every job of this service, started with it
        cluster = local_cluster(settings.workers)
        scheduler = cluster.scheduler_address
    policy = settings.policy
    runner = JobRunner(store, scheduler, settings.workers, policy.roots)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if cluster is not None:
            cluster.close()

    app = FastAPI(
        title="Refinery", version="0.1.0", description="Jobs, datasets and SQL over training data.", lifespan=lifespan
    )
    app.state.interrupted_at_start = interrupted
    app.add_middleware(RequestGuard, tokens=settings.tokens, max_body_bytes=settings.max_body_bytes)

    def scope(name: str):
        def dependency(authorization: Annotated[str | None, Header()] = None) -> str:
            return check_token(authorization, settings.tokens, name)

        return Depends(dependency)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse(
            {"detail": f"{where}: {first['msg']}", "errors": json.loads(json.dumps(error.errors(), default=str))}, 422
        )

    def build_spec(body: JobCreate) -> dict[str, Any]:
        if body.workflow is not None:
            path = (settings.workflows_dir / f"{body.workflow}.yaml").resolve()
            if path.parent != settings.workflows_dir.resolve() or not path.exists():
                raise HTTPException(404, f"no workflow named {body.workflow!r}")
            data = yaml.safe_load(path.read_text())
        else:
            data = json.loads(json.dumps(body.spec))
        for key, value in (("input", body.input), ("output", body.output)):
            if value:
                if not isinstance(data.get(key, {}), dict):
                    raise HTTPException(422, f"{key}: must be a mapping")
                data.setdefault(key, {})["url"] = value
        try:
            for item in body.set:
                set_dotted(data, item)
        except SpecError as error:
            raise HTTPException(422, "; ".join(error.problems)) from None
        return data

    def validated(data: Any) -> WorkflowSpec:
        """The spec with every path-typed field checked by the data-root policy and resolved (403 naming the field
        when one is refused, 422 for any other fault)."""
        try:
            spec = parse_spec(data, policy=policy)
        except SpecError as error:
            raise HTTPException(403 if error.refused else 422, "; ".join(error.problems)) from None
        for url in [spec.input.url] if isinstance(spec.input.url, str) else spec.input.url:
            if "://" not in url and not set("*?[") & set(url) and not os.path.exists(url):  # before it claims an output
                raise HTTPException(422, f"input.url: {url!r} does not exist")
        floors = {"partition_bytes": settings.min_partition_bytes, "batch_bytes": settings.min_batch_bytes}
        for name, floor in floors.items():  # tiny splits or batches multiply tasks, files and per-record costs
            if getattr(spec.input, name) < floor:
                raise HTTPException(422, f"input.{name}: must be >= {floor} in this service")
        return spec

    def job_or_404(job_id: str) -> dict[str, Any]:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    page = (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        """The web page: jobs with live progress, the dataset explorer, a SQL console (it asks for a token). The
        page loads nothing from elsewhere, and its policy says so: a slip in escaping could not fetch or send."""
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.post("/jobs", response_model=JobPublic, status_code=202, responses=ERRORS, dependencies=[scope("submit")])
    def submit(body: JobCreate) -> dict[str, Any]:
        spec = validated(build_spec(body))
        try:
            check_output_placement(spec.output.url, spec.input.url, policy.locations)
            job_id = store.create(spec.name, spec.model_dump(mode="json"), spec.output.url)
        except (PlacementError, OutputTaken) as error:
            raise HTTPException(409, f"output.url: {error}") from None
        if "://" not in spec.output.url:  # the service's own directory from now on; the job refuses a link in its place
            os.makedirs(spec.output.url, exist_ok=True)
        runner.start(job_id, spec)
        return store.get(job_id)

    @app.get("/jobs", response_model=JobsPublic, dependencies=[scope("read")])
    def jobs() -> dict[str, Any]:
        data = store.list()
        return {"data": data, "count": len(data)}

    @app.get("/jobs/{job_id}", response_model=JobPublic, responses=ERRORS, dependencies=[scope("read")])
    def job(job_id: str) -> dict[str, Any]:
        return job_or_404(job_id)

    @app.get("/jobs/{job_id}/logs", responses=ERRORS, dependencies=[scope("read")])
    def logs(job_id: str) -> dict[str, Any]:
        job_or_404(job_id)
        return {"lines": store.logs(job_id)}

    @app.post("/jobs/{job_id}/cancel", response_model=JobPublic, responses=ERRORS, dependencies=[scope("submit")])
    def cancel(job_id: str) -> dict[str, Any]:
        job = job_or_404(job_id)
        if not store.transition(job_id, ("queued", "running"), "cancelling"):
            raise HTTPException(409, f"job {job_id} is {store.get(job_id)['state']}, not queued or running")
        runner.cancel(job_id)
        store.log(job_id, "cancel requested")
        return store.get(job_id) or job

    @app.post("/jobs/{job_id}/resume", response_model=JobPublic, responses=ERRORS, dependencies=[scope("submit")])
    def resume(job_id: str) -> dict[str, Any]:
        job = job_or_404(job_id)
        spec = validated(job["spec"])  # the roots may have changed since the job was submitted
        if not store.transition(job_id, RESUMABLE, "queued", error=None):
            raise HTTPException(
                409, f"job {job_id} is {store.get(job_id)['state']}; only interrupted, cancelled or failed jobs resume"
            )
        store.log(job_id, "resuming: finished partitions are skipped")
        runner.start(job_id, spec)
        return store.get(job_id) or job

    def datasets() -> dict[str, str]:
        """Finished jobs' outputs that may still be read: a local one still the real directory it was written to
        (an output replaced by a link, to '/' say, would widen what SQL may read); one on an object store still
        inside the data roots (the roots may have changed since the job ran)."""
        found = {}
        for j in store.list():
            output = j["output"]
            if j["state"] != "succeeded":
                continue
            if "://" in output:
                readable = policy.inside(output)
            else:
                readable = os.path.isdir(output) and os.path.realpath(output) == output
            if readable:
                found[j["id"]] = output
        return found

    @app.get("/datasets", dependencies=[scope("read")])
    def list_datasets() -> dict[str, Any]:
        data = [{"id": k, "output": v} for k, v in datasets().items()]
        return {"data": data, "count": len(data)}

    def dataset_or_404(dataset_id: str) -> str:
        output = datasets().get(dataset_id)
        if output is None:
            raise HTTPException(404, f"no finished dataset {dataset_id!r}")
        return output

    def manifest_of(dataset_id: str) -> dict[str, Any]:
        root = dataset_or_404(dataset_id)
        try:
            return json.loads(read_bytes(join(root, "manifest.json"), real=True))
        except (StorageError, ValueError) as error:
            raise HTTPException(404, f"dataset {dataset_id!r} has no readable manifest: {error}") from None

    @app.get("/datasets/{dataset_id}", responses=ERRORS, dependencies=[scope("read")])
    def dataset(dataset_id: str) -> dict[str, Any]:
        manifest = manifest_of(dataset_id)
        return {"id": dataset_id, "output": dataset_or_404(dataset_id), "manifest": manifest,
                "funnel": manifest["funnel"]}  # fmt: skip

    @app.get("/datasets/{dataset_id}/shards", responses=ERRORS, dependencies=[scope("read")])
    def shards(dataset_id: str) -> dict[str, Any]:
        manifest = manifest_of(dataset_id)
        data = [{**s, "id": f"{dataset_id}:{s['shard']}"} for s in manifest["shards"]]
        return {"data": data, "count": len(data)}

    @app.get("/shards/{shard_id}/sample", responses=ERRORS, dependencies=[scope("read")])
    def sample(shard_id: str, n: int = 3, offset: Annotated[int, Query(ge=0, le=2**40)] = 0) -> dict[str, Any]:
        dataset_id, _, shard = shard_id.partition(":")
        url = join(dataset_or_404(dataset_id), "shards", f"{shard}.parquet")
        if not shard or "/" in shard or shard.startswith(".") or not _real_file(url):
            raise HTTPException(404, f"no Parquet shard {shard_id!r}")
        import tokenizers

        tok = tokenizers.Tokenizer.from_file(tokenizer_path("deepseek-v3"))
        try:
            with open_input(url, real=True) as handle:
                rows, total = shard_rows(handle, offset, max(0, min(n, 50)))
            out = [_sequence(row, tok) for row in rows]
        except (pa.ArrowException, KeyError, TypeError, ValueError, StorageError) as error:
            raise HTTPException(422, f"shard {shard_id!r} is not a readable token shard: {error}") from None
        return {"shard": shard_id, "sequences": out, "offset": offset, "total": total}

    catalog: dict[str, Any] = {}
    catalog_lock = threading.Lock()
    # SQL runs in its own small pool of threads, so slow queries never hold the threads that serve jobs and status.
    sql_slots = anyio.CapacityLimiter(settings.sql_concurrency)

    def catalog_cursor() -> Any:
        names = {f"ds_{k}": v for k, v in datasets().items()}
        key = frozenset(names.items())
        with catalog_lock:  # one sandboxed database per set of datasets; a cursor per request
            if catalog.get("key") != key:
                catalog.update(key=key, conn=connect(names))
            return catalog["conn"].cursor()

    def readable(source: str) -> bool:
        """An input file named by a docs row may be read again only if the policy admits it as a read path (and
        the read itself is confined to the roots: ``Explorer.texts``)."""
        try:
            policy.check(source, PathKind.READ)
        except PathRefused:
            return False
        return True

    overviews: dict[tuple[str, str], Any] = {}  # a finished dataset's figures do not change

    @contextmanager
    def explorer(dataset_id: str) -> Iterator[Explorer]:
        """The dataset's explorer over a cursor of the sandboxed catalog, its queries interrupted past the SQL
        time limit. A document's input file is read again (to show its text) only when the data-root policy
        admits it, as a job's inputs are."""
        root = dataset_or_404(dataset_id)
        funnel = manifest_of(dataset_id)["funnel"]
        cursor = catalog_cursor()
        timer = threading.Timer(settings.sql_timeout_seconds, cursor.interrupt)
        timer.start()
        try:
            ex = Explorer(cursor, f"ds_{dataset_id}_", funnel, load_settings(root), readable, policy.roots)
            ex.cache = overviews.setdefault((dataset_id, root), {}) if len(overviews) < 64 else {}
            yield ex
        finally:
            timer.cancel()
            cursor.close()

    add_explorer_routes(app, explorer, scope("read"), ERRORS, anyio.CapacityLimiter(settings.sql_concurrency),
                        settings.sql_queue)  # fmt: skip

    def query(text: str) -> Any:
        cursor = catalog_cursor()
        try:
            result = run_sql(cursor, text, settings.sql_row_limit, settings.sql_timeout_seconds, settings.sql_max_bytes)
        except SqlRefused as error:
            raise HTTPException(403, str(error)) from None
        except SqlTimeout as error:
            raise HTTPException(408, str(error)) from None
        finally:
            cursor.close()
        rows = [[v if isinstance(v, int | float | str | bool | type(None)) else str(v) for v in r] for r in result.rows]
        return {"columns": result.columns, "rows": rows, "truncated": result.truncated,
                "truncated_by": result.truncated_by}  # fmt: skip

    @app.post("/sql", response_model=SqlResult, responses=ERRORS, dependencies=[scope("sql")])
    async def sql(
        body: SqlRequest,
        format: Annotated[Literal["json", "csv", "parquet"], Query(description="csv or parquet: a download")] = "json",
    ) -> Any:
        stats = sql_slots.statistics()
        if stats.borrowed_tokens >= stats.total_tokens and stats.tasks_waiting >= settings.sql_queue:
            raise HTTPException(503, "too many SQL queries are running or waiting; retry shortly")
        result = await anyio.to_thread.run_sync(query, body.query, limiter=sql_slots)
        if format == "json":
            return result
        data, media = (result_csv(result), "text/csv") if format == "csv" else (result_parquet(result), PARQUET)
        headers = {"Content-Disposition": f'attachment; filename="result.{format}"'}
        if result["truncated"]:
            headers["X-Refinery-Truncated-By"] = str(result["truncated_by"])
        return Response(data, media_type=media, headers=headers)

    return app

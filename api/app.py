"""The FastAPI app: jobs, datasets, shard samples and SQL; thin routes over the store, runner and catalog."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
import yaml
from distributed import LocalCluster
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from api.models import ErrorBody, JobCreate, JobPublic, JobsPublic, SqlRequest, SqlResult
from api.runner import JobRunner
from api.security import check_token, inside_roots
from api.settings import Settings
from api.store import JobStore
from schemas.spec import SpecError, parse_spec, set_dotted
from stages.tokenize import tokenizer_path
from storage.catalog import SqlRefused, SqlTimeout, connect, run_sql

ERRORS = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody}}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    store = JobStore(settings.state_db)
    interrupted = store.mark_interrupted()
    cluster = None
    scheduler = settings.scheduler
    if scheduler is None:  # one local cluster for every job of this service, started with it
        cluster = LocalCluster(n_workers=settings.workers or os.cpu_count() or 1, threads_per_worker=1,
                               processes=True, dashboard_address=None, silence_logs=logging.ERROR)  # fmt: skip
        scheduler = cluster.scheduler_address
    runner = JobRunner(store, scheduler, settings.workers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if cluster is not None:
            cluster.close()

    app = FastAPI(
        title="Refinery", version="0.1.0", description="Jobs, datasets and SQL over training data.", lifespan=lifespan
    )
    app.state.interrupted_at_start = interrupted

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
        if body.input:
            data.setdefault("input", {})["url"] = body.input
        if body.output:
            data.setdefault("output", {})["url"] = body.output
        try:
            for item in body.set:
                set_dotted(data, item)
        except SpecError as error:
            raise HTTPException(422, "; ".join(error.problems)) from None
        return data

    def validated(data: dict[str, Any]) -> Any:
        try:
            spec = parse_spec(data)
        except SpecError as error:
            raise HTTPException(422, "; ".join(error.problems)) from None
        urls = [inside_roots(u, settings.data_roots, "input") for u in spec.input.url]
        output = inside_roots(spec.output.url, settings.data_roots, "output")
        return spec.model_copy(update={"input": spec.input.model_copy(update={"url": urls}),
                                       "output": spec.output.model_copy(update={"url": output})})  # fmt: skip

    def job_or_404(job_id: str) -> dict[str, Any]:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    page = (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        """The web page: jobs with live progress, a job's funnel, a SQL console (it asks for a token)."""
        return page

    @app.post("/jobs", response_model=JobPublic, status_code=202, responses=ERRORS, dependencies=[scope("submit")])
    def submit(body: JobCreate) -> dict[str, Any]:
        spec = validated(build_spec(body))
        job_id = store.create(spec.name, spec.model_dump(mode="json"), spec.output.url)
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
        if job["state"] not in ("queued", "running") or not runner.cancel(job_id):
            raise HTTPException(409, f"job {job_id} is {job['state']}, not running")
        return store.get(job_id)

    @app.post("/jobs/{job_id}/resume", response_model=JobPublic, responses=ERRORS, dependencies=[scope("submit")])
    def resume(job_id: str) -> dict[str, Any]:
        job = job_or_404(job_id)
        if job["state"] not in ("interrupted", "cancelled", "failed"):
            raise HTTPException(
                409, f"job {job_id} is {job['state']}; only interrupted, cancelled or failed jobs resume"
            )
        store.log(job_id, "resuming: finished partitions are skipped")
        runner.start(job_id, parse_spec(job["spec"]))
        return store.get(job_id)

    def datasets() -> dict[str, str]:
        return {j["id"]: j["output"] for j in store.list() if j["state"] == "succeeded" and Path(j["output"]).exists()}

    @app.get("/datasets", dependencies=[scope("read")])
    def list_datasets() -> dict[str, Any]:
        data = [{"id": k, "output": v} for k, v in datasets().items()]
        return {"data": data, "count": len(data)}

    def dataset_or_404(dataset_id: str) -> Path:
        output = datasets().get(dataset_id)
        if output is None:
            raise HTTPException(404, f"no finished dataset {dataset_id!r}")
        return Path(output)

    @app.get("/datasets/{dataset_id}", responses=ERRORS, dependencies=[scope("read")])
    def dataset(dataset_id: str) -> dict[str, Any]:
        root = dataset_or_404(dataset_id)
        manifest = json.loads((root / "manifest.json").read_text())
        return {"id": dataset_id, "output": str(root), "manifest": manifest, "funnel": manifest["funnel"]}

    @app.get("/datasets/{dataset_id}/shards", responses=ERRORS, dependencies=[scope("read")])
    def shards(dataset_id: str) -> dict[str, Any]:
        manifest = json.loads((dataset_or_404(dataset_id) / "manifest.json").read_text())
        data = [{**s, "id": f"{dataset_id}:{s['shard']}"} for s in manifest["shards"]]
        return {"data": data, "count": len(data)}

    @app.get("/shards/{shard_id}/sample", responses=ERRORS, dependencies=[scope("read")])
    def sample(shard_id: str, n: int = 3) -> dict[str, Any]:
        dataset_id, _, shard = shard_id.partition(":")
        path = dataset_or_404(dataset_id) / "shards" / f"{shard}.parquet"
        if not shard or "/" in shard or not path.exists():
            raise HTTPException(404, f"no Parquet shard {shard_id!r}")
        import tokenizers

        tok = tokenizers.Tokenizer.from_file(tokenizer_path("deepseek-v3"))
        rows = pq.read_table(path).slice(0, max(0, min(n, 50))).to_pylist()
        out = []
        for row in rows:
            bounds = row["cu_seqlens"]
            docs = []
            for doc_id, a, b in zip(row["doc_ids"], bounds[:-1], bounds[1:], strict=True):
                ids = row["input_ids"][a:b]
                docs.append({"doc_id": doc_id, "token_ids": ids, "text": tok.decode(ids, skip_special_tokens=False)})
            out.append({"n_pad": row["n_pad"], "cu_seqlens": bounds, "documents": docs})
        return {"shard": shard_id, "sequences": out}

    catalog: dict[str, Any] = {}
    catalog_lock = threading.Lock()

    @app.post("/sql", response_model=SqlResult, responses=ERRORS, dependencies=[scope("sql")])
    def sql(body: SqlRequest) -> dict[str, Any]:
        names = {f"ds_{k}": v for k, v in datasets().items()}
        key = frozenset(names.items())
        with catalog_lock:  # one sandboxed database per set of datasets; a cursor per request
            if catalog.get("key") != key:
                catalog.update(key=key, conn=connect(names))
            cursor = catalog["conn"].cursor()
        try:
            result = run_sql(cursor, body.query, settings.sql_row_limit, settings.sql_timeout_seconds)
        except SqlRefused as error:
            raise HTTPException(403, str(error)) from None
        except SqlTimeout as error:
            raise HTTPException(408, str(error)) from None
        rows = [[v if isinstance(v, int | float | str | bool | type(None)) else str(v) for v in r] for r in result.rows]
        return {"columns": result.columns, "rows": rows, "truncated": result.truncated}

    return app

"""The dataset explorer's endpoints: overview figures, the charts drawn from them, pages of documents behind any
bar or bin, one document with its text, one duplicate cluster. Read scope; each is usable without the page."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any

import anyio
import duckdb
from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from pipeline.svg import charts
from storage.explore import BINS, MAX_PAGE, DocFilter, ExploreError, Explorer, NotFound


class Overview(BaseModel):
    """The funnel (each row with the filter that lists its documents), a histogram of every numeric column of
    the docs table (bins of all and of kept documents, the rules' thresholds) and the language, domain and
    status mixes."""

    funnel: list[dict[str, Any]]
    histograms: list[dict[str, Any]]
    mix: dict[str, list[dict[str, Any]]]
    tables: list[str]


class Charts(BaseModel):
    """The overview drawn as inline SVG (``pipeline.svg``, as ``refinery report`` draws it); every bar and bin
    carries its filter in ``data-filter``."""

    funnel: str
    histograms: list[str]
    mix: dict[str, str]


class DocumentsPage(BaseModel):
    total: int = Field(description="Documents behind the filter, all pages together.")
    offset: int
    limit: int
    columns: list[str]
    rows: list[dict[str, Any]]


class DocumentView(BaseModel):
    document: dict[str, Any] = Field(description="The document's row of the docs table: provenance, fate, signals.")
    text: str | None = Field(description="Its text, or null when it cannot be shown (``text_from`` says why).")
    text_from: str | None = Field(description="'dropped' (OUT/dropped/), 'input' (read again), or why not.")
    text_truncated: bool = Field(False, description="The text is longer than the 1,000,000 characters shown.")
    text_note: str | None = Field(
        None,
        description="For a kept document read again from its input: how the job "
        "changed its text (C4's lines, PII redaction), if it did.",
    )


class ClusterView(BaseModel):
    cluster: int
    size: int = Field(
        description="Members of the cluster; at most 50 are listed, the kept one first, each text cut "
        "at 20,000 characters (``text_truncated``)."
    )
    members: list[dict[str, Any]]


def add_explorer_routes(
    app: FastAPI, explorer: Callable[[str], AbstractContextManager[Explorer]], read: Any, errors: dict,
    slots: anyio.CapacityLimiter, queue: int,
) -> None:  # fmt: skip
    """``explorer(dataset_id)``: a context giving the dataset's explorer (404 for an unknown dataset), which
    interrupts its queries past the time limit; ``read``: the dependency that demands the read scope. The work
    runs in its own ``slots`` of threads with at most ``queue`` requests waiting (503 beyond), as SQL does: a
    re-read of a large input or a scan of a large table never holds the threads that serve jobs and status."""

    def run(dataset_id: str, work: Callable[[Explorer], Any]) -> Any:
        with explorer(dataset_id) as ex:
            try:
                return work(ex)
            except NotFound as error:
                raise HTTPException(404, str(error)) from None
            except ExploreError as error:
                raise HTTPException(422, str(error)) from None
            except duckdb.InterruptException:
                raise HTTPException(408, "the dataset query ran past the time limit") from None
            except duckdb.Error as error:
                raise HTTPException(422, f"the dataset cannot answer this: {str(error).splitlines()[0]}") from None

    async def answer(dataset_id: str, work: Callable[[Explorer], Any]) -> Any:
        stats = slots.statistics()
        if stats.borrowed_tokens >= stats.total_tokens and stats.tasks_waiting >= queue:
            raise HTTPException(503, "too many explorer requests are running or waiting; retry shortly")
        return await anyio.to_thread.run_sync(run, dataset_id, work, limiter=slots)

    @app.get("/datasets/{dataset_id}/overview", response_model=Overview, responses=errors, dependencies=[read])
    async def overview(dataset_id: str) -> dict[str, Any]:
        return await answer(dataset_id, lambda ex: ex.overview())

    @app.get("/datasets/{dataset_id}/charts", response_model=Charts, responses=errors, dependencies=[read])
    async def dataset_charts(dataset_id: str) -> dict[str, Any]:
        return await answer(dataset_id, lambda ex: charts(ex.overview()))

    @app.get("/datasets/{dataset_id}/documents", response_model=DocumentsPage, responses=errors,
             dependencies=[read])  # fmt: skip
    async def documents(
        dataset_id: str,
        status: Annotated[str | None, Query(description="'kept' or a drop reason (a funnel bar).")] = None,
        quarantined: Annotated[str | None, Query(description="A quarantine reason: its quarantine rows.")] = None,
        column: Annotated[str | None, Query(description="A histogram's column (with bin).")] = None,
        bin: Annotated[int | None, Query(ge=0, lt=BINS, description="A histogram bin as /overview counts it.")] = None,
        lang: str | None = None,
        domain: str | None = None,
        cluster: int | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=2**40)] = 0,
    ) -> dict[str, Any]:
        f = DocFilter(status=status, quarantined=quarantined, column=column, bin=bin, lang=lang, domain=domain,
                      cluster=cluster)  # fmt: skip
        return await answer(dataset_id, lambda ex: ex.documents(f, limit, offset))

    @app.get("/datasets/{dataset_id}/document", response_model=DocumentView, responses=errors, dependencies=[read])
    async def document(
        dataset_id: str, source: Annotated[str, Query(max_length=4096)], line: Annotated[int, Query(ge=0, le=2**62)]
    ) -> dict[str, Any]:
        return await answer(dataset_id, lambda ex: ex.document(source, line))

    @app.get("/datasets/{dataset_id}/clusters/{cluster}", response_model=ClusterView, responses=errors,
             dependencies=[read])  # fmt: skip
    async def cluster_view(dataset_id: str, cluster: int) -> dict[str, Any]:
        return await answer(dataset_id, lambda ex: ex.cluster(cluster))

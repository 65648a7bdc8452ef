"""Request and response bodies of the service (one family per resource)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class JobCreate(BaseModel):
    """A workflow by name (a file of ``workflows/``) with overrides, or a whole spec as JSON."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "workflow": "tokenize",
                    "input": "raw/*.jsonl.gz",
                    "output": "out/run-1",
                    "set": ["stages.1.seq_len=2048"],
                }
            ]
        },
    )

    workflow: str | None = Field(None, description="Name of a workflows/ file, without .yaml.")
    spec: dict[str, Any] | None = Field(None, description="A whole workflow spec, as its YAML would hold it.")
    input: str | None = None
    output: str | None = None
    set: list[str] = Field(default_factory=list, max_length=100, description="Overrides, KEY=VALUE with dotted keys.")

    @model_validator(mode="after")
    def _one_source(self) -> JobCreate:
        if (self.workflow is None) == (self.spec is None):
            raise ValueError("give exactly one of 'workflow' and 'spec'")
        return self


class JobPublic(BaseModel):
    id: str
    name: str
    state: str
    output: str
    created: float
    updated: float
    progress: dict[str, Any]
    funnel: dict[str, Any] | None
    error: str | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class SqlRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"query": "SELECT status, count(*) FROM ds_docs GROUP BY 1"}]}
    )

    query: str = Field(
        min_length=1, max_length=100_000, description="One SELECT over the views <dataset>_docs, _quarantine, …"
    )


class SqlResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    truncated_by: Literal["rows", "bytes"] | None = Field(
        None, description="Which bound cut the result: the row limit or the byte limit."
    )


class ErrorBody(BaseModel):
    detail: str

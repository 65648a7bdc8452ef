"""Service settings, from the environment; unsafe defaults are refused."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

SCOPES = ("read", "submit", "sql")


class Settings(BaseModel):
    #: token → scopes. ``REFINERY_API_TOKENS="alice,bob=read+sql"``: a bare token has every scope.
    tokens: dict[str, frozenset[str]]
    #: Directories that job inputs and outputs must lie in (``REFINERY_DATA_ROOTS``, separated by ``:``).
    data_roots: list[Path]
    state_db: Path = Field(description="SQLite file with the job records (REFINERY_STATE_DB).")
    workflows_dir: Path
    scheduler: str | None = None
    workers: int | None = None
    sql_row_limit: int = 1000
    sql_timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls) -> Settings:
        raw = os.environ.get("REFINERY_API_TOKENS", "")
        tokens: dict[str, frozenset[str]] = {}
        for item in filter(None, (t.strip() for t in raw.split(","))):
            token, _, scopes = item.partition("=")
            tokens[token] = frozenset(scopes.split("+")) if scopes else frozenset(SCOPES)
        if not tokens:
            raise ValueError("REFINERY_API_TOKENS is empty: the service refuses to run without authentication")
        roots = [Path(p).resolve() for p in os.environ.get("REFINERY_DATA_ROOTS", "").split(":") if p]
        if not roots:
            raise ValueError("REFINERY_DATA_ROOTS is empty: name the directories jobs may read and write")
        here = Path(__file__).resolve().parents[1]
        return cls(
            tokens=tokens,
            data_roots=roots,
            state_db=Path(os.environ.get("REFINERY_STATE_DB", roots[0] / "refinery-jobs.sqlite")),
            workflows_dir=Path(os.environ.get("REFINERY_WORKFLOWS", here / "workflows")),
            scheduler=os.environ.get("REFINERY_SCHEDULER") or None,
            workers=int(os.environ["REFINERY_WORKERS"]) if os.environ.get("REFINERY_WORKERS") else None,
        )

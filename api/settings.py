"""Service settings, from the environment; unsafe or malformed values are refused at start."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas.paths import PathPolicy

SCOPES = ("read", "submit", "sql")


class SettingsError(ValueError):
    """A setting is missing or malformed; the service does not start."""


def parse_tokens(raw: str) -> dict[str, frozenset[str]]:
    """``"alice,bob=read+sql"`` → token → scopes. A bare token has every scope; an empty token, an empty scope
    list (``viewer=``) or an unknown scope is refused rather than guessed."""
    tokens: dict[str, frozenset[str]] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        token, sep, scopes = item.strip().partition("=")
        token = token.strip()
        if not token:
            raise SettingsError(f"REFINERY_API_TOKENS: an entry has an empty token ({item.strip()!r})")
        if sep and not scopes.strip():
            raise SettingsError(f"REFINERY_API_TOKENS: a token has '=' but no scope; use one of {SCOPES}")
        names = frozenset(s.strip() for s in scopes.split("+")) if sep else frozenset(SCOPES)
        unknown = sorted(names - set(SCOPES))
        if unknown:
            raise SettingsError(f"REFINERY_API_TOKENS: unknown scope(s) {unknown}; known scopes are {SCOPES}")
        if token in tokens:
            raise SettingsError("REFINERY_API_TOKENS: a token is listed twice")
        tokens[token] = names
    if not tokens:
        raise SettingsError("REFINERY_API_TOKENS is empty: the service refuses to run without authentication")
    return tokens


def _number(name: str, default: float, cast: type = int) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise SettingsError(f"{name} must be > 0")
    return value


class Settings(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    #: token → scopes. ``REFINERY_API_TOKENS="alice,bob=read+sql"``: a bare token has every scope.
    tokens: dict[str, frozenset[str]]
    #: Where job inputs and outputs may be (``REFINERY_DATA_ROOTS``, separated by ``;`` or ``:``; local
    #: directories and ``s3://bucket/prefix`` locations).
    data_roots: list[str]
    state_db: Path = Field(description="SQLite file with the job records (REFINERY_STATE_DB).")
    workflows_dir: Path
    scheduler: str | None = None
    workers: int | None = None
    sql_row_limit: int = 1000
    sql_max_bytes: int = Field(32 * 2**20, description="Bytes of one SQL result (REFINERY_SQL_MAX_BYTES).")
    sql_timeout_seconds: float = 10.0
    sql_concurrency: int = Field(4, description="SQL queries that run at once; the others wait in a queue.")
    sql_queue: int = Field(32, description="SQL queries that may wait; beyond that the service answers 503.")
    max_body_bytes: int = Field(2**20, description="Largest request body (REFINERY_MAX_BODY_BYTES); 413 above.")
    min_partition_bytes: int = Field(2**20, description="Smallest input.partition_bytes a job may ask for.")
    min_batch_bytes: int = Field(2**16, description="Smallest input.batch_bytes a job may ask for.")

    @property
    def policy(self) -> PathPolicy:
        return PathPolicy.from_locations(self.data_roots, protected=[str(self.state_db)])

    @classmethod
    def from_env(cls) -> Settings:
        tokens = parse_tokens(os.environ.get("REFINERY_API_TOKENS", ""))
        raw_roots = os.environ.get("REFINERY_DATA_ROOTS", "")
        separator = ";" if ";" in raw_roots or "://" in raw_roots else ":"
        roots = [r.strip() for r in raw_roots.split(separator) if r.strip()]
        if not roots:
            raise SettingsError("REFINERY_DATA_ROOTS is empty: name the directories jobs may read and write")
        try:
            policy = PathPolicy.from_locations(roots)
        except ValueError as error:
            raise SettingsError(f"REFINERY_DATA_ROOTS: {error}") from None
        first_local = Path(policy.roots[0]) if policy.roots else Path.cwd()
        here = Path(__file__).resolve().parents[1]
        return cls(
            tokens=tokens,
            data_roots=list(policy.locations),
            state_db=Path(os.environ.get("REFINERY_STATE_DB", first_local / "refinery-jobs.sqlite")).resolve(),
            workflows_dir=Path(os.environ.get("REFINERY_WORKFLOWS", here / "workflows")),
            scheduler=os.environ.get("REFINERY_SCHEDULER") or None,
            workers=int(_number("REFINERY_WORKERS", 0)) or None,
            sql_timeout_seconds=_number("REFINERY_SQL_TIMEOUT", 10.0, float),
            sql_max_bytes=int(_number("REFINERY_SQL_MAX_BYTES", 32 * 2**20)),
            sql_concurrency=int(_number("REFINERY_SQL_CONCURRENCY", 4)),
            max_body_bytes=int(_number("REFINERY_MAX_BODY_BYTES", 2**20)),
            min_partition_bytes=int(_number("REFINERY_MIN_PARTITION_BYTES", 2**20)),
            min_batch_bytes=int(_number("REFINERY_MIN_BATCH_BYTES", 2**16)),
        )

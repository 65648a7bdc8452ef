"""Bearer tokens with scopes, and the rule that job paths stay inside the configured data roots."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from fastapi import HTTPException


def check_token(authorization: str | None, tokens: dict[str, frozenset[str]], scope: str) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    token = authorization.split(" ", 1)[1].strip()
    if token not in tokens:
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
    if scope not in tokens[token]:
        raise HTTPException(403, f"this token has no {scope!r} scope")
    return token


def inside_roots(url: str, roots: list[Path], what: str) -> str:
    """The resolved local path of ``url`` if it lies in a data root; 403 otherwise (``../``, absolute paths,
    other schemes)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file"):
        raise HTTPException(403, f"{what} {url!r}: only paths inside the data roots are allowed")
    path = Path(parsed.path if parsed.scheme else url)
    resolved = (roots[0] / path).resolve() if not path.is_absolute() else path.resolve()
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise HTTPException(403, f"{what} {url!r} is outside the data roots")
    return str(resolved)

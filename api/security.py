"""Bearer tokens with scopes, checked before a request body is read, and a bound on request bodies."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

#: Paths served without a token: the page (it asks for one) and the API description.
PUBLIC_PATHS = frozenset({"/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def find_token(authorization: str | None, tokens: dict[str, frozenset[str]]) -> str | None:
    """The configured token the header carries, compared in constant time against each one (no early exit)."""
    if not authorization or authorization[:7].lower() != "bearer ":
        return None
    offered = authorization[7:].strip().encode()
    if not offered:
        return None
    found = None
    for token in tokens:
        if hmac.compare_digest(offered, token.encode()):
            found = token
    return found


def check_token(authorization: str | None, tokens: dict[str, frozenset[str]], scope: str) -> str:
    token = find_token(authorization, tokens)
    if token is None:
        raise HTTPException(401, "missing or unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
    if scope not in tokens[token]:
        raise HTTPException(403, f"this token has no {scope!r} scope")
    return token


class RequestGuard:
    """ASGI middleware: a request with no valid token is answered 401 before its body is read, and a body larger
    than ``max_body_bytes`` is answered 413 (by its Content-Length, or as soon as a chunked body passes the bound).
    Scopes are checked later, per route."""

    def __init__(self, app: ASGIApp, tokens: dict[str, frozenset[str]], max_body_bytes: int) -> None:
        self.app, self.tokens, self.max_body_bytes = app, tokens, max_body_bytes

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["path"] not in PUBLIC_PATHS and find_token(headers.get("authorization"), self.tokens) is None:
            await _answer(send, 401, "missing or unknown bearer token", {"www-authenticate": "Bearer"})
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _answer(send, 413, f"request body larger than {self.max_body_bytes} bytes")
            return
        seen, answered = 0, False

        async def bounded_receive() -> Message:
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request" and not answered:
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:  # a chunked body past the bound: answer now, the app sees a hang-up
                    answered = True
                    await _answer(send, 413, f"request body larger than {self.max_body_bytes} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not answered:
                await send(message)

        await self.app(scope, bounded_receive, guarded_send)


async def _answer(send: Any, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

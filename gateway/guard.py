"""Input the gateway refuses before any route sees it: request bodies over `MAX_BODY_BYTES` (413,
checked on `Content-Length` and counted while a chunked body streams in, so nothing is read past
the limit) and NUL characters in the path, the query or any string of a JSON body (422: PostgreSQL
cannot store a NUL, and no name, id or filter of the API holds one).

An ASGI middleware (`InputGuard`) around the whole application; it buffers at most
`MAX_BODY_BYTES` and hands the body on unchanged. Imports only the standard library and starlette.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commands.catalog import MAX_COMMAND_BYTES

MAX_BODY_BYTES = MAX_COMMAND_BYTES
NUL = "\x00"
NUL_MESSAGE = "holds a NUL character (\\u0000); remove it: no name, id, filter or text of this API contains one"


def too_large(size: int | None = None) -> JSONResponse:
    got = f" ({size} bytes)" if size is not None else ""
    return JSONResponse({"detail": f"the request body is over {MAX_BODY_BYTES} bytes (64 KiB){got}; "
                                   "send a smaller request"}, status_code=413)


def nul_found(where: list[Any]) -> JSONResponse:
    return JSONResponse({"detail": [{"type": "nul_character", "loc": where,
                                     "msg": f"{'.'.join(map(str, where))} {NUL_MESSAGE}"}]}, status_code=422)


def nul_in_query(query_string: bytes) -> list[Any] | None:
    """Where the query holds a NUL (decoded as starlette decodes it), or None."""
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if NUL in name:
            return ["query"]
        if NUL in value:
            return ["query", name]
    return None


def nul_in_json(value: Any, where: list[Any]) -> list[Any] | None:
    """Where a decoded JSON document holds a NUL in a string or a key, or None."""
    if isinstance(value, str):
        return where if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                return where
            if found := nul_in_json(item, [*where, key]):
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if found := nul_in_json(item, [*where, i]):
                return found
    return None


def nul_in_body(body: bytes) -> list[Any] | None:
    if b"\\u0000" not in body:  # a raw NUL byte is not JSON: the route answers 422 for that itself
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return nul_in_json(document, ["body"])


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class InputGuard:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if NUL in scope.get("path", ""):
            await nul_found(["path"])(scope, receive, send)
            return
        if where := nul_in_query(scope.get("query_string", b"")):
            await nul_found(where)(scope, receive, send)
            return
        length = declared_length(scope)
        if length is not None and length > self.max_body:
            await too_large(length)(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay(b"".join(chunks), receive, message), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await too_large()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if where := nul_in_body(body):
            await nul_found(where)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive, then: Message | None = None) -> Receive:
    """A `receive` that yields the buffered body once (or `then`), then the client's own messages."""
    pending: list[Message] = [then or {"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed

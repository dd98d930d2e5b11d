"""What every request to careflow's HTTP API must meet before any route runs.

- a body of at most `max_body_bytes` (413), counted as it arrives, never buffered beyond it;
- a JSON body nested at most `max_depth` deep and free of NUL characters (400): Python's JSON
  parser recurses (100k `[` is a RecursionError, a 500), and Postgres stores no NUL in text or jsonb;
- no NUL in the path, the query string or a header's encoded value (400).

Streamed routes (an encounter's audio upload) are not buffered here: they get the header checks, a
declared length of at most `max_stream_bytes`, and count what they store themselves.

Refusals come in the shape of the route family: a FHIR OperationOutcome under the FHIR bases
(the sandbox EHR, the sandbox payer), the gateway's error JSON everywhere else.  The checked body is
handed on unchanged, so routes read it as usual.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from careflow.validation import json_body_problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64
FHIR_PREFIXES = ("/fhir/", "/payer/")
_FHIR_CODES = {400: "invalid", 413: "too-costly"}
_GATEWAY_TYPES = {400: "invalid_request_error", 413: "request_too_large"}
STREAMED = re.compile(r"^/v1/encounters/[^/]+/audio$")  # bodies the route streams to disk itself
DEFAULT_MAX_STREAM_BYTES = 512 * 1024 * 1024


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)


def _is_json(content_type: str, body: bytes) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    return "json" in ctype or (not ctype and body.lstrip()[:1] in (b"{", b"["))


class RequestLimits:
    """ASGI middleware: `app.add_middleware(RequestLimits, max_body_bytes=..., max_depth=...)`."""

    def __init__(
        self,
        app: App,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_depth: int = DEFAULT_MAX_JSON_DEPTH,
        max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES,
    ) -> None:
        self.app, self.max_body, self.max_depth = app, max_body_bytes, max_depth
        self.max_stream = max_stream_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            if STREAMED.match(scope["path"]):
                self._check_head(scope, self.max_stream)
                await self.app(scope, receive, send)
                return
            body = await self._checked_body(scope, receive)
        except Refused as exc:
            await self._refuse(scope, send, exc)
            return
        if body is None:  # the client went away
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    def _check_head(scope: Scope, limit: int) -> dict[str, str]:
        query = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"\x00" in query or b"%00" in query:
            raise Refused(400, "NUL characters are not accepted in the path or query")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if any("%00" in v for v in headers.values()):  # e.g. FHIR's If-None-Exist: identifier=%00
            raise Refused(400, "NUL characters are not accepted in headers")
        declared = headers.get("content-length", "")
        if declared and (not declared.isdigit() or int(declared) > limit):
            raise Refused(413, f"the body exceeds {limit} bytes")
        return headers

    async def _checked_body(self, scope: Scope, receive: Receive) -> bytes | None:
        headers = self._check_head(scope, self.max_body)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise Refused(413, f"the body exceeds {self.max_body} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and _is_json(headers.get("content-type", ""), body):
            problem = json_body_problem(body, self.max_depth)
            if problem:
                raise Refused(400, problem)
        return body

    @staticmethod
    async def _refuse(scope: Scope, send: Send, exc: Refused) -> None:
        if scope["path"].startswith(FHIR_PREFIXES):
            issue = {"severity": "error", "code": _FHIR_CODES[exc.status], "diagnostics": exc.message}
            payload: dict[str, Any] = {"resourceType": "OperationOutcome", "issue": [issue]}
            ctype = b"application/fhir+json"
        else:
            payload = {"type": "error", "error": {"type": _GATEWAY_TYPES[exc.status], "message": exc.message}}
            ctype = b"application/json"
        body = json.dumps(payload).encode()
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

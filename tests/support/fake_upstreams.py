"""Real local HTTP servers speaking the Anthropic Messages API and OpenAI chat completions.

Each is a FastAPI app served by uvicorn on a free 127.0.0.1 port inside the test's event loop:

    async with fake_anthropic() as (base_url, upstream):
        provider = AnthropicProvider("test-key", base_url=base_url)
        upstream.script(Reply.rate_limited(retry_after=7), Reply.ok("{...}"))   # next replies, in order
        upstream.always(Reply.overloaded())                                     # then every reply
        upstream.latency = 0.05                                                 # added to every reply
        ... upstream.requests[-1].body["system"] ...

A success answers `Reply.ok(text)`'s text, else `upstream.responder(request_body)`, else
`upstream.reply_text`.  Usage is estimated from the request (4 characters a token) and the Messages
API side simulates prompt caching: a cache_control-marked prefix seen before is reported as
`cache_read_input_tokens`, a new one as `cache_creation_input_tokens`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.support.serving import serve

Api = Literal["anthropic", "openai"]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    text: str | None = None  # success text; None: the upstream's responder or reply_text
    error_type: str = ""  # error replies: the API's error type
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (on top of the upstream's latency)
    hang: bool = False  # never answer while the server runs: the client's timeout fires
    finish_reason: str | None = None  # None: end_turn / stop
    body: dict[str, Any] | None = None  # a success answered with exactly this body (e.g. a malformed one)

    @classmethod
    def ok(cls, text: str, *, finish_reason: str | None = None) -> Reply:
        return cls(text=text, finish_reason=finish_reason)

    @classmethod
    def raw(cls, body: dict[str, Any], status: int = 200) -> Reply:
        return cls(status=status, body=body)

    @classmethod
    def overloaded(cls) -> Reply:
        return cls(status=529, error_type="overloaded_error")

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0) -> Reply:
        return cls(status=429, error_type="rate_limit_error", headers={"retry-after": f"{retry_after:g}"})

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls(status=status, error_type="api_error")

    @classmethod
    def bad_request(cls, status: int = 400) -> Reply:
        return cls(status=status, error_type="invalid_request_error")

    @classmethod
    def unauthorized(cls) -> Reply:
        return cls(status=401, error_type="authentication_error")

    @classmethod
    def timeout(cls) -> Reply:
        return cls(hang=True)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    api: Api
    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    latency: float = 0.0
    reply_text: str = "ok"
    responder: Callable[[dict[str, Any]], str] | None = None
    api_key: str | None = None  # when set, other keys are answered 401
    _script: deque[Reply] = field(default_factory=deque)
    _default: Reply = field(default_factory=Reply)
    _cached_prefixes: set[str] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def script(self, *replies: Reply) -> None:
        """The next replies, in order; after them the `always` reply (a success by default)."""
        self._script.extend(replies)

    def always(self, reply: Reply) -> None:
        self._default = reply

    async def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    async def _handle(self, request: Request) -> JSONResponse:
        body = await request.json()
        recorded = Recorded(request.url.path, dict(request.headers), body)
        async with self._arrived:
            self.requests.append(recorded)
            self._arrived.notify_all()
        reply = self._script.popleft() if self._script else self._default
        if self.api_key is not None and self.presented_key(recorded) != self.api_key:
            reply = Reply.unauthorized()
        if reply.hang:
            await self._stopping.wait()
            return JSONResponse({}, status_code=503)
        if self.latency + reply.delay > 0:
            await asyncio.sleep(self.latency + reply.delay)  # simulated upstream latency
        if reply.body is not None:
            return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
        if reply.status >= 400:
            return JSONResponse(self._error(reply), status_code=reply.status, headers=reply.headers)
        text = reply.text if reply.text is not None else self._text(body)
        build = self._message if self.api == "anthropic" else self._chat_completion
        return JSONResponse(build(body, text, reply), headers=reply.headers)

    def presented_key(self, recorded: Recorded) -> str:
        """The API key a request carried: `x-api-key`, `api-key` (Azure) or a bearer token."""
        h = recorded.headers
        return h.get("x-api-key") or h.get("api-key") or h.get("authorization", "").removeprefix("Bearer ")

    def _text(self, body: dict[str, Any]) -> str:
        return self.responder(body) if self.responder is not None else self.reply_text

    def _error(self, reply: Reply) -> dict[str, Any]:
        if self.api == "anthropic":
            return {"type": "error", "error": {"type": reply.error_type, "message": "scripted failure"}}
        return {"error": {"type": reply.error_type, "message": "scripted failure", "code": str(reply.status)}}

    def _message(self, body: dict[str, Any], text: str, reply: Reply) -> dict[str, Any]:
        system = body.get("system", [])
        blocks = system if isinstance(system, list) else [{"type": "text", "text": system}]
        marked = [i for i, b in enumerate(blocks) if isinstance(b, dict) and b.get("cache_control")]
        prefix = json.dumps(blocks[: marked[-1] + 1], sort_keys=True) if marked else ""
        prefix_tokens = _tokens(prefix)
        cache_read = prefix_tokens if prefix and prefix in self._cached_prefixes else 0
        cache_write = prefix_tokens if prefix and not cache_read else 0
        if prefix:
            self._cached_prefixes.add(prefix)
        rest = _tokens(json.dumps(body.get("messages", [])))
        return {
            "id": f"msg_fake_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": [{"type": "text", "text": text}],
            "stop_reason": reply.finish_reason or "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": rest if prefix else rest + _tokens(json.dumps(system)),
                "output_tokens": _tokens(text),
                "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": cache_read,
            },
        }

    def _chat_completion(self, body: dict[str, Any], text: str, reply: Reply) -> dict[str, Any]:
        prompt = _tokens(json.dumps(body.get("messages", [])))
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reply.finish_reason or "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": _tokens(text),
                "total_tokens": prompt + _tokens(text),
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


@contextlib.asynccontextmanager
async def _serve(upstream: FakeUpstream, path: str) -> AsyncIterator[tuple[str, FakeUpstream]]:
    app = FastAPI()
    app.add_api_route(path, upstream._handle, methods=["POST"])
    async with serve(app, lifespan="off", timeout_graceful_shutdown=2) as root:
        upstream.base_url = root
        try:
            yield upstream.base_url, upstream
        finally:
            upstream._stopping.set()  # releases hanging handlers so the server can stop


@contextlib.asynccontextmanager
async def fake_anthropic(
    *, latency: float = 0.0, reply_text: str = "ok", api_key: str | None = None
) -> AsyncIterator[tuple[str, FakeUpstream]]:
    """A Messages API server: POST {base_url}/v1/messages (the SDK's base_url is base_url)."""
    upstream = FakeUpstream("anthropic", latency=latency, reply_text=reply_text, api_key=api_key)
    async with _serve(upstream, "/v1/messages") as served:
        yield served


@contextlib.asynccontextmanager
async def fake_openai(
    *, latency: float = 0.0, reply_text: str = "ok", api_key: str | None = None
) -> AsyncIterator[tuple[str, FakeUpstream]]:
    """A chat completions server: POST {base_url}/v1/chat/completions."""
    upstream = FakeUpstream("openai", latency=latency, reply_text=reply_text, api_key=api_key)
    async with _serve(upstream, "/v1/chat/completions") as served:
        yield served

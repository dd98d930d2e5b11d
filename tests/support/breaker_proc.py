"""Gateway test support: a scripted upstream LLM server, a Provider that calls it over real HTTP, and
(run as a script) a separate OS process that drives the shared circuit breaker.

    python -m tests.support.breaker_proc --dsn D --provider P --url U --at ISO [--count N]

makes N calls one second apart through the breaker (acquire, call, record) and prints one JSON
line: the outcome of each call and the breaker state it left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from careflow.llm.breaker import CircuitBreaker
from careflow.llm.types import CompletionRequest, CompletionResponse, ProviderError, Usage

Step = int | str  # an HTTP error status, or the text of a successful answer


@dataclass
class Upstream:
    """A Messages-API-shaped server: answers `script` in order, then `default`."""

    url: str = ""
    script: list[Step] = field(default_factory=list)
    default: Step = "ok"
    latency_s: float = 0.0
    gate: asyncio.Event | None = None  # when set, requests wait for it: a call held in flight
    output_tokens: int = 20
    requests: list[dict[str, object]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/messages")
        async def messages(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(body)
            if self.gate is not None:
                await self.gate.wait()
            if self.latency_s:
                await asyncio.sleep(self.latency_s)  # the fixed latency of a model, by design
            step = self.script.pop(0) if self.script else self.default
            if isinstance(step, int):
                return JSONResponse(
                    {"type": "error", "error": {"type": "overloaded_error"}}, status_code=step
                )
            prompt = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4 + 1
            return JSONResponse(
                {
                    "content": [{"type": "text", "text": step}],
                    "model": body["model"],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": prompt, "output_tokens": self.output_tokens},
                }
            )

        return app


@contextlib.asynccontextmanager
async def serve_upstream(upstream: Upstream | None = None) -> AsyncIterator[Upstream]:
    up = upstream or Upstream()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(up.app(), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    up.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield up
    finally:
        server.should_exit = True
        await task
        sock.close()


class HttpProvider:
    """A real Provider over HTTP to an `Upstream` (status codes mapped like a vendor's)."""

    def __init__(self, name: str, base_url: str, *, phi_permitted: bool = False) -> None:
        self.name = name
        self.phi_permitted = phi_permitted
        self._client = httpx.AsyncClient(base_url=base_url, timeout=10.0)

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        body = {
            "model": model,
            "system": request.system,
            "max_tokens": request.max_tokens,
            "messages": [m.model_dump() for m in request.messages],
        }
        try:
            r = await self._client.post("/v1/messages", json=body)
        except httpx.TransportError as exc:
            raise ProviderError(self.name, "server", type(exc).__name__) from None
        if r.status_code == 529:
            raise ProviderError(self.name, "overloaded", "529")
        if r.status_code == 429:
            raise ProviderError(self.name, "rate_limited", "429", retry_after=1.0)
        if r.status_code >= 500:
            raise ProviderError(self.name, "server", str(r.status_code))
        if r.status_code >= 400:
            raise ProviderError(self.name, "bad_request", str(r.status_code))
        data = r.json()
        return CompletionResponse(
            text=data["content"][0]["text"],
            provider=self.name,
            model=data["model"],
            finish_reason=data["stop_reason"],
            usage=Usage(
                input_tokens=data["usage"]["input_tokens"], output_tokens=data["usage"]["output_tokens"]
            ),
        )

    async def aclose(self) -> None:
        await self._client.aclose()


async def _main(args: argparse.Namespace) -> dict[str, object]:
    pool = await asyncpg.create_pool(args.dsn, min_size=1, max_size=2)
    assert pool is not None
    breaker = CircuitBreaker(pool)
    provider = HttpProvider(args.provider, args.url)
    at = datetime.fromisoformat(args.at)
    request = CompletionRequest(system="s", messages=[{"role": "user", "content": "ping"}], max_tokens=8)
    outcome: list[str] = []
    try:
        for i in range(args.count):
            now = at + timedelta(seconds=i)
            permit = await breaker.acquire(args.provider, now)
            if permit is None:
                outcome.append("refused")
                continue
            try:
                await provider.complete(request, "m")
            except ProviderError:
                await breaker.record_failure(permit, now)
                outcome.append("probe-failed" if permit.probe else "failed")
            else:
                await breaker.record_success(permit, now)
                outcome.append("probe-succeeded" if permit.probe else "succeeded")
        return {"outcome": outcome, "state": str(await breaker.state(args.provider))}
    finally:
        await provider.aclose()
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--provider", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--at", required=True)
    parser.add_argument("--count", type=int, default=1)
    print(json.dumps(asyncio.run(_main(parser.parse_args()))))
    sys.exit(0)

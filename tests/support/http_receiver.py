"""A real HTTP server on a free loopback port that records what it receives (a webhook receiver)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response


@dataclass
class Received:
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0  # answer 503 to this many requests first
    url: str = ""


@contextlib.asynccontextmanager
async def http_receiver(path: str = "/hook") -> AsyncIterator[Received]:
    rec = Received()
    app = FastAPI()

    @app.post(path)
    async def hook(request: Request) -> Response:
        if rec.fail_next > 0:
            rec.fail_next -= 1
            return Response(status_code=503)
        rec.requests.append({"headers": dict(request.headers), "body": await request.json()})
        return Response(status_code=204)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    rec.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield rec
    finally:
        server.should_exit = True
        await task
        sock.close()

"""A real HTTP server on a free loopback port that records what it receives (a webhook receiver)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response

from tests.support.serving import serve


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

    async with serve(app) as root:
        rec.url = root + path
        yield rec

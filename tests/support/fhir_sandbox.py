"""Serve an ASGI app (the sandbox EHR, or a FHIR server that misbehaves on purpose) over real HTTP on a
free loopback port, inside the test's event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import FastAPI

from careflow.security.request_limits import RequestLimits
from starters.api import fhir as api_fhir
from tests.support.serving import serve

__all__ = ["PREFIX", "sandbox_app", "serve"]

PREFIX = "/fhir/r4"


def sandbox_app(database_url: str, pool_size: int = 10) -> FastAPI:
    """A FastAPI app with only the sandbox router, mounted the way careflow's API mounts it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(database_url, min_size=1, max_size=pool_size)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(RequestLimits)
    app.include_router(api_fhir.router, prefix=PREFIX)
    return app


@contextlib.asynccontextmanager
async def sandbox(database_url: str, pool_size: int = 10, **config: Any) -> AsyncIterator[str]:
    """The sandbox EHR on a free port; yields its FHIR base URL."""
    async with serve(sandbox_app(database_url, pool_size), **config) as root:
        yield root + PREFIX

"""careflow's HTTP API (FastAPI): health, the payload codec endpoint, the building blocks' routers and each
pipeline's (workers/pipelines.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from careflow.config import Settings
from careflow.db import endpoint
from careflow.db.pool import create_pool
from careflow.security.codec import EncryptionCodec
from careflow.security.keys import codec_tokens, payload_keyring
from careflow.security.request_limits import RequestLimits
from starters.api import feedback as api_feedback
from starters.api import fhir as api_fhir
from starters.api import gateway as api_gateway
from starters.api import payer as api_payer
from starters.api.codec import codec_router
from starters.api.common import ApiError
from workers import pipelines


def create_app(settings: Settings) -> FastAPI:
    codec = EncryptionCodec(payload_keyring(settings))
    tokens = codec_tokens(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(title="careflow", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    ui = settings.temporal_ui_url
    app.add_middleware(
        CORSMiddleware,
        allow_origins=sorted({ui, ui.replace("127.0.0.1", "localhost")}),
        allow_methods=["POST", "GET", "OPTIONS"],
        allow_headers=["content-type", "x-namespace", "authorization"],
        allow_credentials=True,
    )
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.api_max_body_bytes,
        max_depth=settings.api_max_json_depth,
        max_stream_bytes=settings.api_max_audio_bytes,
    )
    app.include_router(codec_router(codec.encode, codec.decode, tokens))
    # Routers of the building blocks (starters/api/<area>.py), then each pipeline's.
    app.include_router(api_gateway.router)
    app.include_router(api_feedback.router)
    app.include_router(api_fhir.router, prefix="/fhir/r4")
    app.include_router(api_payer.router, prefix="/payer/r4")
    for pipeline in pipelines.PIPELINES:
        for router in pipeline.routers:
            app.include_router(router)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        # A new session, not a pooled one: a Postgres that is shutting down still serves the
        # sessions it has, and refuses new ones, which is what every other process will meet.
        try:
            conn = await asyncpg.connect(endpoint.active_url(settings), timeout=3)
            try:
                await conn.fetchval("SELECT 1", timeout=3)
            finally:
                await conn.close()
            db = "ok"
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            db = f"error: {type(exc).__name__}"
        return {"status": "ok" if db == "ok" else "degraded", "database": db}

    return app

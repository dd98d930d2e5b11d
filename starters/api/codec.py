"""Temporal's remote-codec protocol on careflow's API: POST /codec/encode and /codec/decode.

The Web UI (`--ui-codec-endpoint`) and `temporal --codec-endpoint` send `Payloads` as protobuf JSON
and get them back transformed.  Callers authenticate with `Authorization: Bearer <token>`
(`temporal --codec-auth "Bearer ..."`) or, for the Web UI, which cannot add headers on the dev
server, with the token in the path: `/codec/t/<token>/decode`.  Every decode is logged with the
namespace and the caller's kind of credential, never the payloads.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence

from fastapi import APIRouter, HTTPException, Request, Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload, Payloads

from careflow.security.logging import get_logger

log = get_logger("careflow.codec")

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


def codec_router(encode: Transform, decode: Transform, tokens: list[str]) -> APIRouter:
    router = APIRouter(tags=["codec"])

    def _authorised(request: Request, path_token: str | None) -> str:
        offered = path_token
        kind = "path-token"
        if offered is None:
            header = request.headers.get("authorization", "")
            scheme, _, value = header.partition(" ")
            offered, kind = (value.strip(), "bearer") if scheme.lower() == "bearer" else (None, "none")
        # As bytes: compare_digest raises on a non-ASCII str, and a token is whatever a caller sends.
        if offered and any(secrets.compare_digest(offered.encode(), t.encode()) for t in tokens):
            return kind
        raise HTTPException(status_code=401, detail="codec endpoint needs a valid bearer token")

    async def _apply(fn: Transform, request: Request) -> Response:
        try:
            # Newer UIs and CLIs may send fields this protobuf version does not know: keep going.
            payloads = json_format.Parse(await request.body(), Payloads(), ignore_unknown_fields=True)
        except (json_format.ParseError, DecodeError, UnicodeDecodeError) as exc:
            raise HTTPException(status_code=400, detail=f"body is not Payloads JSON: {exc}") from None
        try:
            result = Payloads(payloads=await fn(payloads.payloads))
        except Exception as exc:
            raise HTTPException(status_code=422, detail=f"{type(exc).__name__}: {exc}") from None
        return Response(content=json_format.MessageToJson(result), media_type="application/json")

    async def _handle(op: str, fn: Transform, request: Request, token: str | None) -> Response:
        kind = _authorised(request, token)
        response = await _apply(fn, request)
        log.info("codec request", op=op, namespace=request.headers.get("x-namespace"), auth=kind)
        return response

    @router.post("/codec/encode")
    async def encode_header(request: Request) -> Response:
        return await _handle("encode", encode, request, None)

    @router.post("/codec/decode")
    async def decode_header(request: Request) -> Response:
        return await _handle("decode", decode, request, None)

    @router.post("/codec/t/{token}/encode")
    async def encode_path(token: str, request: Request) -> Response:
        return await _handle("encode", encode, request, token)

    @router.post("/codec/t/{token}/decode")
    async def decode_path(token: str, request: Request) -> Response:
        return await _handle("decode", decode, request, token)

    return router

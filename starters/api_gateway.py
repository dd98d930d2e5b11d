"""The AI gateway for other teams: an Anthropic-Messages-compatible `POST /v1/messages`.

The official `anthropic` SDK works unmodified with `base_url=<careflow API>` and a team token as
`api_key` (sent as `x-api-key`; `Authorization: Bearer` works too).  The request's `model` names a
tier (`frontier`, `standard`, `efficient`), never a vendor model.  Optional headers:
`x-careflow-use-case` (cost attribution, default "api") and `x-careflow-contains-phi: true`.
Errors use Anthropic's error JSON: 401 bad token, 402 budget exhausted, 403 tier or PHI not
allowed, 429 over the token rate limit (with Retry-After), 529 no provider available.
`GET /metrics` (also `/v1/gateway/metrics`) serves the gateway's Prometheus metrics.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal, TypeVar

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from careflow.config import Settings
from careflow.llm.cost import BREAKER_STATE_VALUE
from careflow.llm.errors import (
    BudgetExceeded,
    GatewayError,
    PhiNotPermitted,
    ProvidersUnavailable,
    RateLimited,
    TierNotAllowed,
    UnknownTeam,
)
from careflow.llm.gateway import Gateway
from careflow.llm.types import (
    MAX_OUTPUT_TOKENS,
    CompletionRequest,
    CompletionResponse,
    Message,
    ProviderError,
    Tier,
)
from careflow.security.logging import get_logger
from careflow.validation import error_fields

log = get_logger(__name__)
router = APIRouter()
Body = TypeVar("Body", bound=BaseModel)

_STREAM_CHUNK_CHARS = 48
_STOP_REASONS = {"max_tokens": "max_tokens", "length": "max_tokens", "stop_sequence": "stop_sequence"}


class _TextBlock(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class _InMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str | list[_TextBlock]


class MessagesBody(BaseModel):
    """The Anthropic Messages API's request, as strictly typed as Anthropic types it: a non-empty
    `messages`, an integer `max_tokens` within the models' output limit, a boolean `stream`."""

    model_config = ConfigDict(extra="ignore")  # metadata, stop_sequences, ...: accepted, not used
    model: str
    max_tokens: StrictInt = Field(gt=0, le=MAX_OUTPUT_TOKENS)
    messages: list[_InMessage] = Field(min_length=1)
    system: str | list[_TextBlock] | None = None
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    stream: StrictBool = False


def _text(content: str | list[_TextBlock] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(b.text for b in content)


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def refusal_response(exc: GatewayError | ProviderError) -> JSONResponse:
    if isinstance(exc, RateLimited | ProvidersUnavailable):
        retry = {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
        if isinstance(exc, RateLimited):
            return error_response(429, "rate_limit_error", str(exc), retry)
        return error_response(529, "overloaded_error", str(exc), retry)
    if isinstance(exc, BudgetExceeded):
        return error_response(402, "billing_error", str(exc))
    if isinstance(exc, TierNotAllowed | PhiNotPermitted | UnknownTeam):
        return error_response(403, "permission_error", str(exc))
    if isinstance(exc, ProviderError) and exc.kind == "bad_request":
        return error_response(400, "invalid_request_error", str(exc))
    return error_response(502, "api_error", str(exc))


def gateway_of(request: Request) -> Gateway:
    """One gateway per API process, built on first use from the app's pool."""
    state = request.app.state
    gateway: Gateway | None = getattr(state, "llm_gateway", None)
    if gateway is None:
        gateway = Gateway.from_settings(state.pool, Settings())
        state.llm_gateway = gateway
    return gateway


def team_of(request: Request, gateway: Gateway) -> str | None:
    state = request.app.state
    secret: str | None = getattr(state, "llm_gateway_secret", None)
    if secret is None:
        secret = gateway.config.signing_secret(Settings())
        state.llm_gateway_secret = secret
    token = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if not token and auth.lower().startswith("bearer "):
        token = auth[7:].strip()
    if not token:
        return None
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["team_id", "exp"]})
    except jwt.PyJWTError:
        return None
    team_id = claims.get("team_id")
    return team_id if isinstance(team_id, str) else None


def sign_team_token(secret: str, team_id: str, ttl_days: int) -> str:
    import time

    now = int(time.time())
    claims = {"team_id": team_id, "sub": f"team:{team_id}", "iat": now, "exp": now + ttl_days * 86400}
    return jwt.encode(claims, secret, algorithm="HS256")


def _message_json(msg_id: str, tier: Tier, resp: CompletionResponse) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": tier.value,
        "content": [{"type": "text", "text": resp.text}],
        "stop_reason": _STOP_REASONS.get(resp.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": resp.usage.input_tokens,
            "output_tokens": resp.usage.output_tokens,
            "cache_read_input_tokens": resp.usage.cache_read_tokens,
            "cache_creation_input_tokens": resp.usage.cache_write_tokens,
        },
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(message: dict[str, Any]) -> AsyncIterator[bytes]:
    # The provider call is complete (the gateway settles cost before answering): replay it as the
    # Messages API's event sequence, so streaming clients work unchanged.
    text: str = message["content"][0]["text"]
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 0}}
    yield _sse("message_start", {"type": "message_start", "message": start})
    yield _sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    for i in range(0, len(text), _STREAM_CHUNK_CHARS):
        delta = {"type": "text_delta", "text": text[i : i + _STREAM_CHUNK_CHARS]}
        yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


async def team_and_body(request: Request, model: type[Body]) -> tuple[str, Body] | JSONResponse:
    """The team behind the request's token and its validated JSON body, or the 401 / 400 answer
    (naming invalid fields, never echoing their values)."""
    team_id = team_of(request, gateway_of(request))
    if team_id is None:
        return error_response(401, "authentication_error", "invalid or missing team token")
    try:
        return team_id, model.model_validate(await request.json())
    except (ValidationError, ValueError) as exc:
        where = error_fields(exc) if isinstance(exc, ValidationError) else "body must be JSON"
        return error_response(400, "invalid_request_error", f"invalid request: {where}")


@router.post("/v1/messages")
async def messages(request: Request) -> Response:
    checked = await team_and_body(request, MessagesBody)
    if isinstance(checked, JSONResponse):
        return checked
    team_id, body = checked
    gateway = gateway_of(request)
    try:
        tier = Tier(body.model)
        completion = CompletionRequest(
            system=_text(body.system),
            messages=[Message(role=m.role, content=_text(m.content)) for m in body.messages],
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            contains_phi=request.headers.get("x-careflow-contains-phi", "").lower() == "true",
        )
    except (ValidationError, ValueError) as exc:
        where = (
            error_fields(exc)
            if isinstance(exc, ValidationError)
            else "model must name a tier: frontier, standard or efficient"
        )
        return error_response(400, "invalid_request_error", f"invalid request: {where}")

    msg_id = f"msg_{uuid.uuid4().hex}"
    use_case = request.headers.get("x-careflow-use-case", "api")[:64]
    response: Response
    try:
        resp = await gateway.complete(team_id, use_case, tier, completion, msg_id)
    except (GatewayError, ProviderError) as exc:
        response = refusal_response(exc)
    else:
        message = _message_json(msg_id, tier, resp)
        if body.stream:
            response = StreamingResponse(_stream(message), media_type="text/event-stream")
        else:
            response = JSONResponse(message)
    response.headers["request-id"] = msg_id
    return response


@router.get("/metrics")  # where a Prometheus scrape config looks by default
@router.get("/v1/gateway/metrics")
async def metrics(request: Request) -> Response:
    gateway = gateway_of(request)
    for provider, state in (await gateway.breaker.states()).items():
        gateway.metrics.breaker.labels(provider).set(BREAKER_STATE_VALUE[state.value])
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

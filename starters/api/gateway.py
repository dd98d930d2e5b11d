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
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from careflow.llm.cost import BREAKER_STATE_VALUE
from careflow.llm.errors import GatewayError
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
from starters.api.common import ApiError, TeamId, body_of, gateway_of, refusal

log = get_logger(__name__)
router = APIRouter()

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


@router.post("/v1/messages")
async def messages(request: Request, team_id: TeamId) -> Response:
    body = await body_of(request, MessagesBody)
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
        raise ApiError.invalid(where) from None

    msg_id = f"msg_{uuid.uuid4().hex}"
    use_case = request.headers.get("x-careflow-use-case", "api")[:64]
    response: Response
    try:
        resp = await gateway.complete(team_id, use_case, tier, completion, msg_id)
    except (GatewayError, ProviderError) as exc:
        response = refusal(exc).response()
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

"""A self-hosted inference server on this machine (`careflow serve-llm`): the OpenAI-compatible API that
vLLM or llama.cpp's server offers in production, answered here by the offline engine, so the embedded
stack has a self-hosted tier that can really go down (seed P20: the inference tier's failover).

POST /v1/chat/completions answers deterministically and says so (`system_fingerprint`
"careflow-offline-<engine version>"); GET /v1/models is what the DR health probe reads.  Nothing of a
request's content is logged.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from careflow.llm.providers.offline import ENGINE_VERSION, OfflineProvider
from careflow.llm.types import MAX_OUTPUT_TOKENS, CompletionRequest, Message

MODELS = ("offline-frontier", "offline-standard", "offline-efficient")


class _ChatMessage(BaseModel):
    role: str
    content: str = ""


class _ChatRequest(BaseModel):
    model: str
    messages: list[_ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(1024, ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float = 0.0


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def app() -> FastAPI:
    engine = OfflineProvider()
    api = FastAPI(title="careflow self-hosted inference (offline engine)", docs_url=None, redoc_url=None)

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "owned_by": "careflow"} for m in MODELS],
        }

    @api.post("/v1/chat/completions", response_model=None)
    async def chat(body: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        try:
            req = _ChatRequest.model_validate(body)
        except ValidationError as exc:
            where = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            return _error(400, "invalid_request_error", f"invalid request at: {where}")
        if req.model not in MODELS:
            return _error(404, "model_not_found", f"no model {req.model!r}: serves {', '.join(MODELS)}")
        system = "\n".join(m.content for m in req.messages if m.role == "system")
        turns = [
            Message.model_validate(m.model_dump()) for m in req.messages if m.role in ("user", "assistant")
        ]
        answer = await engine.complete(
            CompletionRequest(system=system, messages=turns, max_tokens=req.max_tokens), req.model
        )
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "system_fingerprint": f"careflow-offline-{ENGINE_VERSION}",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": answer.usage.input_tokens,
                "completion_tokens": answer.usage.output_tokens,
                "total_tokens": answer.usage.input_tokens + answer.usage.output_tokens,
            },
        }

    return api

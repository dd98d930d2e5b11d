"""Anthropic Messages API through the official SDK, with prompt caching of system and evidence.

The system prompt and the retrieved context (the request's evidence) are sent as two system content
blocks marked `cache_control: ephemeral`: every call of a task shares the first prefix, every call
over the same evidence the second.  The model is the pinned version the gateway passes in.  The SDK
never retries (max_retries=0): the gateway owns retries, fallback and the circuit breaker.
"""

from __future__ import annotations

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types import (
    AssistantMessageParam,
    CacheControlEphemeralParam,
    TextBlockParam,
    UserMessageParam,
)

from careflow.llm.providers import http_error, refuse_phi
from careflow.llm.tasks import render_evidence
from careflow.llm.types import CompletionRequest, CompletionResponse, Message, ProviderError, Usage

_CACHED: CacheControlEphemeralParam = {"type": "ephemeral"}


def system_blocks(request: CompletionRequest) -> list[TextBlockParam]:
    blocks: list[TextBlockParam] = [{"type": "text", "text": request.system, "cache_control": _CACHED}]
    if request.evidence or request.task:
        blocks.append({"type": "text", "text": render_evidence(request.evidence), "cache_control": _CACHED})
    return blocks


def _turn(m: Message) -> UserMessageParam | AssistantMessageParam:
    if m.role == "user":
        return {"role": "user", "content": m.content}
    return {"role": "assistant", "content": m.content}


def _error_type(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error")
    return str(err.get("type", "")) if isinstance(err, dict) else ""


class AnthropicProvider:
    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        phi_permitted: bool = False,
        timeout: float = 60.0,
        name: str = "anthropic",
    ) -> None:
        self.name = name
        self.phi_permitted = phi_permitted
        self._client = AsyncAnthropic(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        if request.contains_phi and not self.phi_permitted:
            raise refuse_phi(self.name)
        # No temperature: current Claude models fix their sampling and this SDK no longer takes it.
        messages = [_turn(m) for m in request.messages]
        try:
            message = await self._client.messages.create(
                model=model,
                max_tokens=request.max_tokens,
                system=system_blocks(request),
                messages=messages,
            )
        except anthropic.APITimeoutError:
            raise ProviderError(self.name, "timeout", "request timed out") from None
        except anthropic.APIConnectionError:
            raise ProviderError(self.name, "timeout", "connection failed") from None
        except anthropic.APIStatusError as exc:
            raise http_error(self.name, exc.status_code, exc.response.headers, _error_type(exc)) from None
        except anthropic.APIError:  # e.g. a 2xx body the SDK cannot read
            raise ProviderError(self.name, "server", "unreadable response") from None
        try:
            return self._response(message, model)
        except (AttributeError, TypeError, ValueError):  # a body without the Messages API fields
            raise ProviderError(self.name, "server", "malformed Messages API response") from None

    def _response(self, message: anthropic.types.Message, model: str) -> CompletionResponse:
        text = "".join(block.text for block in message.content if block.type == "text")
        u = message.usage
        return CompletionResponse(
            text=text,
            provider=self.name,
            model=message.model or model,
            finish_reason=message.stop_reason or "end_turn",
            usage=Usage(
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cache_read_tokens=u.cache_read_input_tokens or 0,
                cache_write_tokens=u.cache_creation_input_tokens or 0,
            ),
            metadata={"response_id": message.id, "requested_model": model},
        )

    async def aclose(self) -> None:
        await self._client.close()

"""OpenAI-compatible chat completions over httpx: vLLM, Azure OpenAI (v1 API), llama.cpp server.

System prompt and rendered evidence form one leading system message, so the prompt prefix is stable
for the server's automatic prefix caching (vLLM, OpenAI); cached prompt tokens are reported back.
No retries here: the gateway owns them.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

from careflow.llm.providers import http_error, refuse_phi
from careflow.llm.tasks import render_evidence
from careflow.llm.types import CompletionRequest, CompletionResponse, ProviderError, Usage


def chat_messages(request: CompletionRequest) -> list[dict[str, str]]:
    system = request.system
    if request.evidence or request.task:
        system = f"{system}\n\n{render_evidence(request.evidence)}"
    return [
        {"role": "system", "content": system},
        *({"role": m.role, "content": m.content} for m in request.messages),
    ]


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


class OpenAICompatibleProvider:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        name: str = "openai_compatible",
        phi_permitted: bool = True,
        timeout: float = 60.0,
        auth_header: Literal["bearer", "api-key"] = "bearer",  # Azure OpenAI keys use `api-key`
    ) -> None:
        self.name = name
        self.phi_permitted = phi_permitted
        root = base_url.rstrip("/")
        self.url = f"{root}/chat/completions" if root.endswith("/v1") else f"{root}/v1/chat/completions"
        self.models_url = self.url.removesuffix("/chat/completions") + "/models"
        headers = {}
        if api_key:
            headers = (
                {"Authorization": f"Bearer {api_key}"} if auth_header == "bearer" else {"api-key": api_key}
            )
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers)

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        if request.contains_phi and not self.phi_permitted:
            raise refuse_phi(self.name)
        payload = {
            "model": model,
            "messages": chat_messages(request),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        try:
            resp = await self._client.post(self.url, json=payload)
        except httpx.TimeoutException:
            raise ProviderError(self.name, "timeout", "request timed out") from None
        except httpx.TransportError:
            raise ProviderError(self.name, "timeout", "connection failed") from None
        if resp.status_code >= 400:
            raise http_error(self.name, resp.status_code, resp.headers, _error_type(resp))
        try:
            body = resp.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError(self.name, "server", "malformed chat completion response") from None
        usage = body.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return CompletionResponse(
            text=text,
            provider=self.name,
            model=str(body.get("model") or model),
            finish_reason=str(choice.get("finish_reason") or "stop"),
            usage=Usage(
                input_tokens=_int(usage.get("prompt_tokens")),
                output_tokens=_int(usage.get("completion_tokens")),
                cache_read_tokens=_int(details.get("cached_tokens")),
            ),
            metadata={"response_id": str(body.get("id", "")), "requested_model": model},
        )

    async def answers(self, timeout: float = 3.0) -> bool:
        """The server answers its model list (vLLM, llama.cpp and OpenAI all serve GET /v1/models)."""
        try:
            resp = await self._client.get(self.models_url, timeout=timeout)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_type(resp: httpx.Response) -> str:
    try:
        body: Any = resp.json()
    except ValueError:
        return ""
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("type") or err.get("code") or "") if isinstance(err, dict) else ""

"""The contract between the gateway and its providers.

Callers name a capability tier, never a model.  A request may carry a careflow task name and the
evidence it may use: real LLM providers render both into the prompt (evidence as cacheable context
blocks); the offline provider drafts from them deterministically.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Protocol

from pydantic import BaseModel, Field

# The most output tokens any model careflow routes to accepts in one call (Claude's largest).
MAX_OUTPUT_TOKENS = 128_000


class Tier(StrEnum):
    FRONTIER = "frontier"
    STANDARD = "standard"
    EFFICIENT = "efficient"


class Evidence(BaseModel):
    id: str  # what a citation names: "Condition/123", "guideline:cap-2019#3.1"
    kind: str  # "fhir" | "guideline" | "transcript" | "lab" | ...
    title: str = ""
    text: str


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class CompletionRequest(BaseModel):
    system: str
    messages: list[Message]
    max_tokens: int = Field(1024, ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float = 0.0
    task: str | None = None  # careflow task name, e.g. "pa_justification"
    task_input: dict[str, object] = Field(default_factory=dict)
    evidence: list[Evidence] = Field(default_factory=list)
    contains_phi: bool = False


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class CompletionResponse(BaseModel):
    text: str
    provider: str
    model: str
    finish_reason: str  # "end_turn" | "max_tokens" | "stop" | ...
    usage: Usage
    metadata: dict[str, str] = Field(default_factory=dict)  # offline provider: {"engine": "offline", ...}


ProviderErrorKind = Literal["overloaded", "rate_limited", "server", "timeout", "bad_request", "auth"]


class ProviderError(Exception):
    """A provider call failed; `kind` decides whether routing falls back and retries."""

    def __init__(
        self, provider: str, kind: ProviderErrorKind, message: str, retry_after: float | None = None
    ):
        self.provider = provider
        self.kind = kind
        self.retry_after = retry_after
        super().__init__(f"{provider}: {kind}: {message}")

    @property
    def falls_back(self) -> bool:
        return self.kind in ("overloaded", "rate_limited", "server", "timeout")


class Provider(Protocol):
    name: str
    phi_permitted: bool  # self-hosted or under a BAA

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse: ...

"""LLM providers behind the gateway: Anthropic (SDK), OpenAI-compatible (httpx) and the offline engine.

Each implements `careflow.llm.types.Provider`; none retries or falls back, the gateway owns both.  The
helpers here map an upstream HTTP failure to a `ProviderError` kind the same way for every provider.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from careflow.llm.types import ProviderError, ProviderErrorKind


def status_kind(status: int) -> ProviderErrorKind:
    """The ProviderError kind of an HTTP error status (529 is Anthropic's 'overloaded')."""
    if status == 529:
        return "overloaded"
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server"
    return "bad_request"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return max(float(lowered["retry-after-ms"]) / 1000.0, 0.0)
        value = lowered.get("retry-after")
        if value is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def http_error(provider: str, status: int, headers: Mapping[str, str], error_type: str = "") -> ProviderError:
    """A ProviderError naming the status and the upstream's error type only (never its message: PHI)."""
    kind = status_kind(status)
    retry_after = retry_after_seconds(headers) if kind in ("rate_limited", "overloaded", "server") else None
    detail = f"HTTP {status}" + (f" {error_type}" if error_type else "")
    return ProviderError(provider, kind, detail, retry_after=retry_after)


def refuse_phi(provider: str) -> ProviderError:
    # Defence in depth: the gateway routes PHI only to permitted providers; a provider never sends it.
    return ProviderError(provider, "bad_request", "request contains PHI; provider not permitted PHI")

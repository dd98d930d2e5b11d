"""LLM providers behind the gateway: Anthropic (SDK), OpenAI-compatible (httpx), the offline engine and
the fine-tuned note model (in process); `build_providers` makes the ones the settings name.

Each implements `careflow.llm.types.Provider`; none retries or falls back, the gateway owns both.  The
helpers here map an upstream HTTP failure to a `ProviderError` kind the same way for every provider.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from careflow.llm.types import Provider, ProviderError, ProviderErrorKind

if TYPE_CHECKING:
    from careflow.config import Settings
    from careflow.llm.config import GatewayConfig


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


def build_providers(settings: Settings, config: GatewayConfig) -> dict[str, Provider]:
    """The providers the configuration names: offline always, the others when configured."""
    from careflow.llm.providers.note_model import note_model
    from careflow.llm.providers.offline import OfflineProvider

    providers: dict[str, Provider] = {"offline": OfflineProvider(), "note_model": note_model(settings)}
    if settings.anthropic_api_key is not None:
        from careflow.llm.providers.anthropic import AnthropicProvider

        providers["anthropic"] = AnthropicProvider(
            settings.anthropic_api_key.get_secret_value(),
            base_url=config.anthropic_base_url,
            phi_permitted=config.anthropic_phi_permitted,
            timeout=config.provider_timeout_s,
        )
    if settings.openai_base_url is not None:
        from careflow.llm.providers.openai_compatible import OpenAICompatibleProvider

        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        providers["azure_openai"] = OpenAICompatibleProvider(
            settings.openai_base_url,
            api_key=key,
            name="azure_openai",
            phi_permitted=config.azure_openai_phi_permitted,
            timeout=config.provider_timeout_s,
        )
    if config.self_hosted_base_url is not None:
        from careflow.llm.config import SELF_HOSTED
        from careflow.llm.providers.openai_compatible import OpenAICompatibleProvider

        providers[SELF_HOSTED] = OpenAICompatibleProvider(
            config.self_hosted_base_url,
            name=SELF_HOSTED,
            phi_permitted=True,
            timeout=config.provider_timeout_s,
        )
    return providers

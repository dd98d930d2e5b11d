"""AI gateway configuration: tier table, prices, providers, breaker and budget numbers.

Every field is an environment variable `CAREFLOW_GATEWAY_<FIELD>` (JSON for the tables).  The
defaults route every tier to the offline provider, so `make run` works without any API key; the
seed's production table (Anthropic primary, Azure OpenAI fallback) is `SEED_ROUTES`, selected with
`CAREFLOW_GATEWAY_ROUTING=seed`.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from careflow.config import ConfigError, Settings
from careflow.llm.types import Tier
from careflow.security.keys import dev_secret


class Target(BaseModel):
    provider: str  # a key of the gateway's provider map: "anthropic", "azure_openai", "offline", ...
    model: str


SELF_HOSTED = "self_hosted"  # the provider name of CAREFLOW_GATEWAY_SELF_HOSTED_BASE_URL


class TierRoute(BaseModel):
    primary: Target
    fallback: Target | None = None

    def targets(self) -> list[Target]:
        return [self.primary] if self.fallback is None else [self.primary, self.fallback]


class Price(BaseModel):
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_read: Decimal = Decimal(0)
    cache_write: Decimal = Decimal(0)


# The seed's tier table (P3): Anthropic primary, Azure OpenAI fallback.
SEED_ROUTES: dict[Tier, TierRoute] = {
    Tier.FRONTIER: TierRoute(
        primary=Target(provider="anthropic", model="claude-opus-4-8"),
        fallback=Target(provider="azure_openai", model="gpt-4o"),
    ),
    Tier.STANDARD: TierRoute(
        primary=Target(provider="anthropic", model="claude-sonnet-4-6"),
        fallback=Target(provider="azure_openai", model="gpt-4o-mini"),
    ),
    Tier.EFFICIENT: TierRoute(
        primary=Target(provider="anthropic", model="claude-haiku-4-5"),
        fallback=Target(provider="azure_openai", model="gpt-3.5-turbo"),
    ),
}

OFFLINE_ROUTES: dict[Tier, TierRoute] = {
    tier: TierRoute(primary=Target(provider="offline", model=f"offline-{tier.value}")) for tier in Tier
}


def _p(inp: str, out: str, cache_read: str = "0", cache_write: str = "0") -> Price:
    return Price(
        input=Decimal(inp),
        output=Decimal(out),
        cache_read=Decimal(cache_read),
        cache_write=Decimal(cache_write),
    )


# List prices per million tokens.  Offline models are priced like the tier they stand in for, so
# budgets and the cost report behave on the embedded stack as they will in production.
DEFAULT_PRICES: dict[str, Price] = {
    "claude-opus-4-8": _p("15", "75", "1.5", "18.75"),
    "claude-sonnet-4-6": _p("3", "15", "0.3", "3.75"),
    "claude-haiku-4-5": _p("1", "5", "0.1", "1.25"),
    "gpt-4o": _p("2.5", "10", "1.25"),
    "gpt-4o-mini": _p("0.15", "0.6", "0.075"),
    "gpt-3.5-turbo": _p("0.5", "1.5"),
    "offline-frontier": _p("15", "75", "1.5", "18.75"),
    "offline-standard": _p("3", "15", "0.3", "3.75"),
    "offline-efficient": _p("1", "5", "0.1", "1.25"),
}
# A model missing from the price table is charged at this (deliberately high) price, never at zero.
UNKNOWN_MODEL_PRICE = _p("15", "75", "1.5", "18.75")


class GatewayConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREFLOW_GATEWAY_", env_file=".env", extra="ignore")

    routing: Literal["offline", "seed"] = "offline"
    routes: dict[Tier, TierRoute] | None = None  # overrides `routing` when set (JSON)
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES))

    # HS256 secret of team tokens; in dev a generated secret under CAREFLOW_HOME/secrets/.
    jwt_secret: SecretStr | None = None
    jwt_ttl_days: int = Field(90, ge=1)

    # Providers (keys come from CAREFLOW_ANTHROPIC_API_KEY / CAREFLOW_OPENAI_* in careflow.config).
    anthropic_base_url: str | None = None
    anthropic_phi_permitted: bool = False  # True only under a signed BAA
    azure_openai_phi_permitted: bool = False
    # A self-hosted OpenAI-compatible server (vLLM, llama.cpp; `careflow serve-llm` on the embedded
    # stack): the provider `self_hosted`, permitted PHI (it runs inside the hospital).  The DR failover
    # probes it and, when it is down, holds its breaker open so its tiers answer from their fallback.
    self_hosted_base_url: str | None = None
    provider_timeout_s: float = Field(30.0, gt=0)

    # Circuit breaker (seed P3): open after 5 failures in 60 s, half-open after 60 s.
    breaker_failures: int = Field(5, ge=1)
    breaker_window_s: float = Field(60.0, gt=0)
    breaker_open_s: float = Field(60.0, gt=0)
    # A half-open probe whose process died is given up after this long, so the breaker cannot stick.
    breaker_probe_ttl_s: float = Field(120.0, gt=0)

    # Budget thresholds as fractions of the monthly budget (seed P3).
    budget_alert_at: float = 0.8
    budget_downgrade_at: float = 0.9
    rate_window_s: float = Field(60.0, gt=0)

    def tier_routes(self) -> dict[Tier, TierRoute]:
        if self.routes is not None:
            return self.routes
        return dict(SEED_ROUTES if self.routing == "seed" else OFFLINE_ROUTES)

    def price(self, model: str) -> Price:
        return self.prices.get(model, UNKNOWN_MODEL_PRICE)

    def signing_secret(self, settings: Settings) -> str:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        if settings.environment != "dev":
            raise ConfigError("CAREFLOW_GATEWAY_JWT_SECRET", "required when CAREFLOW_ENVIRONMENT=production")
        # Shared by the CLI (which signs) and every API replica (which verifies).
        return dev_secret(settings, "gateway.jwt", secrets.token_urlsafe(48))

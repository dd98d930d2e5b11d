"""The seed's tier table with the real providers: AnthropicProvider primary, the OpenAI-compatible
(Azure OpenAI) provider as fallback, each against a real local server speaking its API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest_asyncio
from pydantic import SecretStr

from careflow.config import Settings
from careflow.llm.config import SEED_ROUTES, GatewayConfig
from careflow.llm.gateway import Gateway
from careflow.llm.providers import build_providers
from careflow.llm.teams import Team, TeamStore
from careflow.llm.types import CompletionRequest, Message, Tier
from tests.support.fake_upstreams import Reply, fake_anthropic, fake_openai


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert p is not None
    yield p
    await p.close()


async def test_seed_table_falls_back_from_anthropic_to_azure_openai(pool: asyncpg.Pool) -> None:
    team = f"seed-{uuid.uuid4().hex[:8]}"
    await TeamStore(pool).create(
        Team(team_id=team, monthly_budget_usd=Decimal(10), tokens_per_minute=50_000, allowed_tiers=list(Tier))
    )
    async with fake_anthropic() as (anthropic_url, claude), fake_openai() as (openai_url, azure):
        settings = Settings(anthropic_api_key=SecretStr("test-key"), openai_base_url=openai_url)
        config = GatewayConfig(routing="seed", anthropic_base_url=anthropic_url)
        providers = build_providers(settings, config)
        assert sorted(providers) == ["anthropic", "azure_openai", "note_model", "offline"]
        gateway = Gateway(pool, providers, config)
        request = CompletionRequest(
            system="Be brief.", messages=[Message(role="user", content="Hi")], max_tokens=32
        )

        _, rec = await gateway.complete_with_record(team, "uc", Tier.FRONTIER, request, "seed-1")
        assert (rec.provider, rec.model) == ("anthropic", SEED_ROUTES[Tier.FRONTIER].primary.model)
        assert claude.requests[-1].body["model"] == "claude-opus-4-8"

        claude.script(Reply.overloaded())
        _, rec = await gateway.complete_with_record(team, "uc", Tier.STANDARD, request, "seed-2")
        assert (rec.provider, rec.model, rec.fallback_used) == ("azure_openai", "gpt-4o-mini", True)
        assert azure.requests[-1].body["model"] == "gpt-4o-mini"
        assert rec.cost_usd > 0

"""`POST /v1/feedback` for real (the API app over HTTP, the offline gateway, Postgres): feedback on a
team's own response is recorded, the last word wins, and the flag rate of a feature's responses from
one model counts it; bad bodies are 400s naming the field, someone else's response a 404."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import httpx
import pytest_asyncio

from careflow.config import Settings
from careflow.llm.config import GatewayConfig
from careflow.llm.teams import Team, TeamStore, sign_team_token
from careflow.llm.types import Tier
from careflow.observe.feedback import flag_rate
from starters.api.app import create_app
from tests.support.serving import serve


@pytest_asyncio.fixture
async def api(database_url: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        async with serve(create_app(Settings())) as url:
            yield url, pool
    finally:
        await pool.close()


async def team_token(pool: asyncpg.Pool) -> str:
    team_id = f"feedback-{uuid.uuid4().hex[:8]}"
    await TeamStore(pool).create(
        Team(
            team_id=team_id,
            allowed_tiers=[Tier.STANDARD],
            monthly_budget_usd=Decimal(50),
            tokens_per_minute=100_000,
        )
    )
    return sign_team_token(GatewayConfig().signing_secret(Settings()), team_id, ttl_days=1)


async def ask(http: httpx.AsyncClient, token: str, use_case: str) -> str:
    r = await http.post(
        "/v1/messages",
        headers={"x-api-key": token, "x-careflow-use-case": use_case},
        json={"model": "standard", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]},
    )
    assert r.status_code == 200, r.text
    return r.headers["request-id"]


async def test_feedback_is_recorded_and_counted_in_the_flag_rate(api: tuple[str, asyncpg.Pool]) -> None:
    url, pool = api
    token, use_case = await team_token(pool), f"feature-{uuid.uuid4().hex[:6]}"
    since = datetime.now(UTC) - timedelta(minutes=30)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        ids = [await ask(http, token, use_case) for _ in range(4)]
        auth = {"x-api-key": token}
        r = await http.post(
            "/v1/feedback", headers=auth, json={"response_id": ids[0], "flag": True, "reason": "unsafe"}
        )
        assert r.status_code == 201 and r.json() == {"response_id": ids[0], "rating": None, "flag": True}
        assert (
            await http.post("/v1/feedback", headers=auth, json={"response_id": ids[1], "rating": "up"})
        ).status_code == 201
        rate = await flag_rate(pool, use_case, "offline-standard", since)
        assert (rate.responses, rate.flags) == (4, 1)
        # the last word wins: unflagged
        await http.post("/v1/feedback", headers=auth, json={"response_id": ids[0], "rating": "down"})
        assert (await flag_rate(pool, use_case, "offline-standard", since)).flags == 0
        row = await pool.fetchrow("SELECT * FROM llm_feedback WHERE response_id = $1", ids[0])
        assert row["rating"] == "down" and row["reason"] is None and row["use_case"] == use_case


async def test_bad_feedback_is_a_400_naming_the_field_and_a_stranger_response_a_404(
    api: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = api
    token, other = await team_token(pool), await team_token(pool)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        mine = await ask(http, token, "api")
        for body, field in [
            ({"response_id": mine}, "rating or flag"),
            ({"response_id": mine, "rating": "meh"}, "rating"),
            ({"response_id": mine, "flag": True, "reason": "Mr Smith was upset"}, "reason"),
            ({"response_id": "../x", "flag": True}, "response_id"),
            ({"response_id": mine, "flag": "yes"}, "flag"),
        ]:
            r = await http.post("/v1/feedback", headers={"x-api-key": token}, json=body)
            assert r.status_code == 400 and field in r.json()["error"]["message"], (body, r.text)
            assert "Smith" not in r.text
        r = await http.post(
            "/v1/feedback", headers={"x-api-key": other}, json={"response_id": mine, "flag": True}
        )
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        assert (await http.post("/v1/feedback", json={"response_id": mine, "flag": True})).status_code == 401

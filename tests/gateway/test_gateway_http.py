"""careflow's HTTP API driven by the official anthropic SDK: uvicorn on a free port in front of the
gateway, real Postgres, real local upstreams.  Team tokens come from `careflow teams token`."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import anthropic
import asyncpg
import httpx
import jwt
import pytest
import pytest_asyncio

from careflow.config import Settings
from careflow.llm.budget import month_of
from careflow.llm.config import GatewayConfig, Price, Target, TierRoute
from careflow.llm.gateway import Gateway
from careflow.llm.ratelimit import TokenRateLimiter
from careflow.llm.teams import Team, TeamStore, sign_team_token
from careflow.llm.types import Tier
from starters.api.app import create_app
from tests.support.breaker_proc import HttpProvider, Upstream, serve_upstream
from tests.support.serving import serve

ROOT = Path(__file__).resolve().parents[2]
PRICES = {"m": Price(input=Decimal(1), output=Decimal(2))}


def cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "starters", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@dataclass
class Api:
    url: str
    upstream: Upstream
    pool: asyncpg.Pool

    async def team(
        self, *, tiers: str = "standard,efficient", budget: str = "100", tpm: int = 100_000
    ) -> tuple[str, str]:
        team_id = f"http-{uuid.uuid4().hex[:8]}"
        allowed = [Tier(t) for t in tiers.split(",")]
        await TeamStore(self.pool).create(
            Team(
                team_id=team_id,
                allowed_tiers=allowed,
                monthly_budget_usd=Decimal(budget),
                tokens_per_minute=tpm,
            )
        )
        secret = GatewayConfig().signing_secret(Settings())  # the dev secret the API verifies with
        return team_id, sign_team_token(secret, team_id, ttl_days=1)

    def client(self, token: str) -> anthropic.AsyncAnthropic:
        # max_retries=0: the SDK would otherwise retry 429s itself, honouring Retry-After.
        return anthropic.AsyncAnthropic(base_url=self.url, api_key=token, max_retries=0)


@pytest_asyncio.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    assert pool is not None
    async with serve_upstream() as up:
        provider = HttpProvider(f"up-{uuid.uuid4().hex[:6]}", up.url)
        routes = {t: TierRoute(primary=Target(provider=provider.name, model="m")) for t in Tier}
        app = create_app(Settings())
        # The API's own gateway, pointed at the local upstream; the JWT secret stays the dev default
        # that `careflow teams token` signs with.
        app.state.llm_gateway = Gateway(
            pool, {provider.name: provider}, GatewayConfig(routes=routes, prices=PRICES)
        )
        try:
            async with serve(app) as url:
                yield Api(url, up, pool)
        finally:
            await provider.aclose()
            await pool.close()


HELLO = [{"role": "user", "content": "Hello"}]


async def test_messages_create_returns_text_and_usage(api: Api) -> None:
    team, token = await api.team()
    msg = await api.client(token).messages.create(model="standard", max_tokens=64, messages=HELLO)  # type: ignore[arg-type]
    assert msg.content[0].type == "text" and msg.content[0].text == "ok"
    assert msg.model == "standard" and msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == 20 and msg.usage.input_tokens > 0
    assert msg._request_id and msg._request_id.startswith("msg_")
    async with api.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM llm_calls WHERE request_id = $1", msg._request_id)
    assert row is not None and row["team_id"] == team and row["use_case"] == "api" and row["outcome"] == "ok"
    # The vendor's model never leaks to the caller: it named a tier.
    assert api.upstream.requests[0]["model"] == "m"


async def test_streaming_emits_the_messages_event_sequence(api: Api) -> None:
    api.upstream.default = "A streamed answer that is longer than one chunk of the replayed stream, for sure."
    _, token = await api.team()
    async with api.client(token).messages.stream(model="efficient", max_tokens=64, messages=HELLO) as stream:  # type: ignore[arg-type]
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_stop", "message_delta"} <= set(kinds)
    assert final.content[0].text == api.upstream.default and final.usage.output_tokens == 20  # type: ignore[union-attr]


async def test_bearer_authorization_header_is_accepted(api: Api) -> None:
    _, token = await api.team()
    client = anthropic.AsyncAnthropic(base_url=api.url, auth_token=token, max_retries=0)
    msg = await client.messages.create(model="standard", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
    assert msg.content[0].text == "ok"  # type: ignore[union-attr]


async def test_bad_jwt_is_401(api: Api) -> None:
    team, _ = await api.team()
    forged = jwt.encode(
        {"team_id": team, "exp": 9_999_999_999},
        "not-the-gateway-secret-but-long-enough-for-hs256",
        algorithm="HS256",
    )
    for token in ("not-a-jwt", forged):
        with pytest.raises(anthropic.AuthenticationError) as err:
            await api.client(token).messages.create(model="standard", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
        assert err.value.status_code == 401
    assert not api.upstream.requests


async def test_tier_not_allowed_is_403(api: Api) -> None:
    _, token = await api.team(tiers="efficient")
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        await api.client(token).messages.create(model="frontier", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
    assert "frontier" in str(err.value) and err.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


async def test_phi_from_a_team_without_permission_is_403(api: Api) -> None:
    _, token = await api.team()
    client = anthropic.AsyncAnthropic(
        base_url=api.url, api_key=token, max_retries=0, default_headers={"x-careflow-contains-phi": "true"}
    )
    with pytest.raises(anthropic.PermissionDeniedError):
        await client.messages.create(model="standard", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
    assert not api.upstream.requests


async def test_over_the_rate_limit_is_429_with_retry_after(api: Api) -> None:
    team, token = await api.team(tpm=1000)
    await TokenRateLimiter(api.pool).admit(team, 1000, 1000)
    with pytest.raises(anthropic.RateLimitError) as err:
        await api.client(token).messages.create(model="standard", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
    assert err.value.status_code == 429
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60


async def test_exhausted_budget_is_402(api: Api) -> None:
    team, token = await api.team(budget="1")
    async with api.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO llm_budget_ledger (team_id, month, spent_usd) VALUES ($1, $2, 1)", team, month_of()
        )
    with pytest.raises(anthropic.APIStatusError) as err:
        await api.client(token).messages.create(model="standard", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
    assert err.value.status_code == 402 and err.value.body["error"]["type"] == "billing_error"  # type: ignore[index]


async def test_a_vendor_model_name_is_a_400(api: Api) -> None:
    _, token = await api.team()
    with pytest.raises(anthropic.BadRequestError):
        await api.client(token).messages.create(model="claude-opus-4-8", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]


async def test_metrics_and_cost_report(api: Api, tmp_path: Path) -> None:
    team, token = await api.team()
    client = anthropic.AsyncAnthropic(
        base_url=api.url, api_key=token, max_retries=0, default_headers={"x-careflow-use-case": "triage"}
    )
    for _ in range(3):
        await client.messages.create(model="standard", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{api.url}/v1/gateway/metrics")).text
    assert 'careflow_gateway_request_seconds_count{model="m",use_case="triage"} 3.0' in text
    assert f'careflow_gateway_tokens_total{{kind="completion",model="m",team="{team}"}} 60.0' in text
    assert "# TYPE careflow_gateway_breaker_state gauge" in text
    async with httpx.AsyncClient() as http:
        scraped = (await http.get(f"{api.url}/metrics")).text  # Prometheus's default path
    assert 'careflow_gateway_request_seconds_count{model="m",use_case="triage"} 3.0' in scraped

    out = tmp_path / "cost.csv"
    report = cli("cost", "report", "--month", f"{month_of():%Y-%m}", "--csv", str(out))
    assert team in report
    rows = {r["team_id"]: r for r in csv.DictReader(out.open())}
    assert rows[team]["calls"] == "3" and rows[team]["completion_tokens"] == "60"
    assert Decimal(rows[team]["cost_usd"]) > 0


async def test_cli_creates_a_team_and_its_token_authenticates(api: Api) -> None:
    team_id = f"cli-{uuid.uuid4().hex[:8]}"
    cli("teams", "create", team_id, "--budget", "25", "--tpm", "5000", "--tiers", "efficient", "--phi")
    cli(
        "teams",
        "set",
        team_id,
        "--tiers",
        "standard,efficient",
        "--budget",
        "30",
        "--kb-tenants",
        "east,west",
    )
    listing = cli("teams", "list")
    assert team_id in listing and "30.00" in listing
    team = await TeamStore(api.pool).get(team_id)
    assert team.kb_tenants == ["east", "west"] and team.monthly_budget_usd == 30
    token = cli("teams", "token", team_id).strip()
    assert jwt.decode(token, options={"verify_signature": False})["team_id"] == team_id
    msg = await api.client(token).messages.create(model="standard", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
    assert msg.content[0].text == "ok"  # type: ignore[union-attr]

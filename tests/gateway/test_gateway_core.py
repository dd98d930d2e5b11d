"""The gateway on the session's real Postgres, calling real local HTTP upstreams: routing and
fallback, circuit breaker, token rate limit, budgets (thresholds and concurrent reservations),
PHI refusal, cost attribution, structured outputs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
import pytest_asyncio

from careflow.llm.breaker import CircuitBreaker
from careflow.llm.budget import month_of
from careflow.llm.config import GatewayConfig, Price, Target, TierRoute
from careflow.llm.errors import (
    BudgetExceeded,
    PhiNotPermitted,
    ProvidersUnavailable,
    RateLimited,
    StructuredOutputFailed,
    TierNotAllowed,
)
from careflow.llm.gateway import Gateway
from careflow.llm.ratelimit import TokenRateLimiter
from careflow.llm.tasks import LabUrgency, LabUrgencyInput
from careflow.llm.teams import Team, TeamStore
from careflow.llm.types import CompletionRequest, Evidence, Message, ProviderError, Tier
from tests.support.breaker_proc import HttpProvider, Upstream, serve_upstream

# 1 token = $0.001 on the "big" models, so costs are easy to reason about.
PRICES = {
    "big-a": Price(input=Decimal(1000), output=Decimal(1000)),
    "big-b": Price(input=Decimal(1000), output=Decimal(1000)),
    "small": Price(input=Decimal(10), output=Decimal(10)),
}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def request(max_tokens: int = 50, phi: bool = False) -> CompletionRequest:
    return CompletionRequest(
        system="You are terse.",
        messages=[Message(role="user", content="Summarise the guideline section.")],
        max_tokens=max_tokens,
        contains_phi=phi,
    )


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=2, max_size=24)
    assert p is not None
    yield p
    await p.close()


class Rig:
    """Two upstreams (primary A, fallback B) behind one gateway, with providers named per test."""

    def __init__(self, pool: asyncpg.Pool, a: Upstream, b: Upstream, *, phi_b: bool = False) -> None:
        self.pool = pool
        self.a, self.b = a, b
        self.pa, self.pb = uid("pa"), uid("pb")
        self.providers = {
            self.pa: HttpProvider(self.pa, a.url),
            self.pb: HttpProvider(self.pb, b.url, phi_permitted=phi_b),
        }
        routes = {
            tier: TierRoute(
                primary=Target(provider=self.pa, model="big-a"),
                fallback=Target(provider=self.pb, model="big-b"),
            )
            for tier in (Tier.FRONTIER, Tier.STANDARD)
        }
        routes[Tier.EFFICIENT] = TierRoute(primary=Target(provider=self.pa, model="small"))
        self.config = GatewayConfig(routes=routes, prices=PRICES, jwt_secret="test-secret")
        self.gateway = Gateway(pool, self.providers, self.config)

    async def team(self, budget: str = "100", tpm: int = 100_000, phi: bool = False, **kw: object) -> str:
        team_id = uid("team")
        await TeamStore(self.pool).create(
            Team(
                team_id=team_id,
                monthly_budget_usd=Decimal(budget),
                tokens_per_minute=tpm,
                phi_permitted=phi,
                allowed_tiers=[Tier.FRONTIER, Tier.STANDARD, Tier.EFFICIENT],
                **kw,
            )
        )
        return team_id

    async def spend(self, team_id: str, usd: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO llm_budget_ledger (team_id, month, spent_usd) VALUES ($1, $2, $3)",
                team_id,
                month_of(),
                Decimal(usd),
            )

    async def ledger(self, team_id: str) -> tuple[Decimal, Decimal]:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT spent_usd, reserved_usd FROM llm_budget_ledger WHERE team_id = $1", team_id
            )
        assert row is not None
        return row["spent_usd"], row["reserved_usd"]

    async def calls(self, team_id: str) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await conn.fetch("SELECT * FROM llm_calls WHERE team_id = $1 ORDER BY id", team_id)


@pytest_asyncio.fixture
async def rig(pool: asyncpg.Pool) -> AsyncIterator[Rig]:
    async with serve_upstream() as a, serve_upstream() as b:
        r = Rig(pool, a, b, phi_b=True)
        yield r
        for p in r.providers.values():
            await p.aclose()


# -- routing and the breaker ----------------------------------------------------------------------
async def test_primary_serves_and_the_call_is_recorded_with_cost(rig: Rig) -> None:
    team = await rig.team()
    resp, rec = await rig.gateway.complete_with_record(team, "summaries", Tier.STANDARD, request(), "req-1")
    assert resp.provider == rig.pa and rec.model == "big-a" and not rec.fallback_used
    assert len(rig.a.requests) == 1 and not rig.b.requests
    [row] = await rig.calls(team)
    assert row["outcome"] == "ok" and row["use_case"] == "summaries" and row["request_id"] == "req-1"
    assert row["completion_tokens"] == 20 and row["prompt_tokens"] > 0
    assert row["cost_usd"] == Decimal(row["prompt_tokens"] + 20) / 1000
    assert row["finish_reason"] == "end_turn" and row["response_chars"] == 2
    spent, reserved = await rig.ledger(team)
    assert spent == row["cost_usd"] and reserved == 0


async def test_overloaded_primary_falls_back(rig: Rig) -> None:
    team = await rig.team()
    rig.a.script = [529]
    resp, rec = await rig.gateway.complete_with_record(team, "uc", Tier.FRONTIER, request(), uid("r"))
    assert resp.provider == rig.pb and rec.model == "big-b" and rec.fallback_used
    assert len(rig.a.requests) == 1 and len(rig.b.requests) == 1


async def test_bad_request_does_not_fall_back(rig: Rig) -> None:
    team = await rig.team()
    rig.a.script = [400]
    with pytest.raises(ProviderError) as err:
        await rig.gateway.complete(team, "uc", Tier.STANDARD, request(), uid("r"))
    assert err.value.kind == "bad_request" and not rig.b.requests
    assert (await rig.calls(team))[0]["outcome"] == "provider_bad_request"
    assert await rig.ledger(team) == (0, 0)  # nothing charged, nothing held


async def test_breaker_opens_after_five_failures_and_routing_skips_the_primary(rig: Rig) -> None:
    team = await rig.team()
    rig.a.default = 503
    for _ in range(5):
        resp = await rig.gateway.complete(team, "uc", Tier.STANDARD, request(), uid("r"))
        assert resp.provider == rig.pb
    assert str(await rig.gateway.breaker.state(rig.pa)) == "open"
    resp = await rig.gateway.complete(team, "uc", Tier.STANDARD, request(), uid("r"))
    assert resp.provider == rig.pb and len(rig.a.requests) == 5  # the open breaker kept A out


async def test_every_provider_failing_is_a_retryable_refusal(rig: Rig) -> None:
    team = await rig.team()
    rig.a.script, rig.b.script = [503], [529]
    with pytest.raises(ProvidersUnavailable) as err:
        await rig.gateway.complete(team, "uc", Tier.STANDARD, request(), uid("r"))
    assert err.value.retryable and err.value.retry_after > 0
    assert await rig.ledger(team) == (0, 0)


async def test_breaker_window_single_probe_and_reopen_with_an_injected_clock(pool: asyncpg.Pool) -> None:
    breaker, provider = CircuitBreaker(pool), uid("p")
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)

    def at(s: float) -> datetime:
        return t0 + timedelta(seconds=s)

    async def fail(s: float) -> str:
        permit = await breaker.acquire(provider, at(s))
        assert permit is not None
        return str(await breaker.record_failure(permit, at(s)))

    assert [await fail(s) for s in (0, 1, 2, 3)] == ["closed"] * 4
    # The window slides: at 61 s the failures at 0 s and 1 s no longer count.
    assert [await fail(s) for s in (61, 62, 63, 64, 65)] == ["closed"] * 4 + ["open"]
    assert await breaker.acquire(provider, at(65 + 59)) is None
    # Half-open after 60 s: of five concurrent callers exactly one becomes the probe.
    permits = await asyncio.gather(*(breaker.acquire(provider, at(125)) for _ in range(5)))
    probes = [p for p in permits if p is not None]
    assert len(probes) == 1 and probes[0].probe
    assert str(await breaker.state(provider)) == "half_open"
    # The probe fails: open again, for another full period from now.
    assert str(await breaker.record_failure(probes[0], at(126))) == "open"
    assert await breaker.acquire(provider, at(126 + 59)) is None
    probe = await breaker.acquire(provider, at(126 + 60))
    assert probe is not None and probe.probe
    await breaker.record_success(probe, at(187))
    assert str(await breaker.state(provider)) == "closed"
    permit = await breaker.acquire(provider, at(188))
    assert permit is not None and not permit.probe


async def test_breaker_success_resets_the_failure_count(pool: asyncpg.Pool) -> None:
    breaker, provider = CircuitBreaker(pool), uid("p")
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
    for round_ in range(2):
        for i in range(4):
            permit = await breaker.acquire(provider, t0)
            assert permit is not None
            assert (
                str(await breaker.record_failure(permit, t0 + timedelta(seconds=round_ * 10 + i))) == "closed"
            )
        permit = await breaker.acquire(provider, t0)
        assert permit is not None and permit.had_failures
        await breaker.record_success(permit, t0)
    assert str(await breaker.state(provider)) == "closed"


# -- team policy: tiers, PHI ------------------------------------------------------------------------
async def test_tier_not_allowed_is_refused_before_any_provider_call(rig: Rig) -> None:
    team_id = uid("team")
    await TeamStore(rig.pool).create(
        Team(
            team_id=team_id,
            monthly_budget_usd=Decimal(10),
            tokens_per_minute=10_000,
            allowed_tiers=[Tier.EFFICIENT],
        )
    )
    with pytest.raises(TierNotAllowed):
        await rig.gateway.complete(team_id, "uc", Tier.FRONTIER, request(), uid("r"))
    assert not rig.a.requests and (await rig.calls(team_id))[0]["outcome"] == "tier_not_allowed"


async def test_phi_goes_only_to_a_phi_permitted_provider(rig: Rig) -> None:
    team = await rig.team(phi=True)
    # Primary A is not PHI-permitted (no BAA): the PHI call skips it and goes to B.
    resp = await rig.gateway.complete(team, "uc", Tier.STANDARD, request(phi=True), uid("r"))
    assert resp.provider == rig.pb and not rig.a.requests
    # The efficient tier has only A: a PHI call there is refused, and nothing is sent.
    with pytest.raises(PhiNotPermitted, match="no PHI-permitted provider"):
        await rig.gateway.complete(team, "uc", Tier.EFFICIENT, request(phi=True), uid("r"))
    assert not rig.a.requests


async def test_phi_from_a_team_without_phi_permission_is_refused(rig: Rig) -> None:
    team = await rig.team(phi=False)
    with pytest.raises(PhiNotPermitted, match="not permitted to send PHI"):
        await rig.gateway.complete(team, "uc", Tier.STANDARD, request(phi=True), uid("r"))
    assert not rig.a.requests and not rig.b.requests
    assert (await rig.calls(team))[0]["outcome"] == "phi_refused"


# -- token rate limit -------------------------------------------------------------------------------
async def test_rate_limit_sliding_window_with_an_injected_clock(pool: asyncpg.Pool, rig: Rig) -> None:
    team = await rig.team(tpm=1000)
    limiter = TokenRateLimiter(pool)
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
    await limiter.admit(team, 1000, 600, t0)
    await limiter.admit(team, 1000, 300, t0 + timedelta(seconds=20))
    with pytest.raises(RateLimited) as err:
        await limiter.admit(team, 1000, 200, t0 + timedelta(seconds=30))
    # The 600 leave the window at 60 s: 30 s from now.
    assert err.value.retry_after == pytest.approx(30.0)
    await limiter.admit(team, 1000, 200, t0 + timedelta(seconds=60.5))
    assert await limiter.used(team, t0 + timedelta(seconds=61)) == 500


async def test_gateway_rate_limit_refuses_with_retry_after_and_reconciles_to_actual(rig: Rig) -> None:
    team = await rig.team(tpm=1000)
    # Estimate = prompt estimate + max_tokens is admitted; afterwards the window holds the actual tokens.
    _, rec = await rig.gateway.complete_with_record(
        team, "uc", Tier.STANDARD, request(max_tokens=900), uid("r")
    )
    assert await rig.gateway.limiter.used(team) == rec.prompt_tokens + rec.completion_tokens
    with pytest.raises(RateLimited) as err:
        await rig.gateway.complete(team, "uc", Tier.STANDARD, request(max_tokens=990), uid("r"))
    assert 0 < err.value.retry_after <= 60
    assert len(rig.a.requests) == 1
    assert (await rig.calls(team))[-1]["outcome"] == "rate_limited"
    assert (await rig.ledger(team))[1] == 0  # no reservation left behind


# -- budgets ----------------------------------------------------------------------------------------
async def test_budget_alert_at_80_percent(rig: Rig) -> None:
    team = await rig.team(budget="1")
    await rig.spend(team, "0.79")
    _, rec = await rig.gateway.complete_with_record(team, "uc", Tier.STANDARD, request(), uid("r"))
    assert rec.tier == "standard" and rec.cost_usd >= Decimal("0.01")
    assert [k for _, k in await rig.gateway.ledger.events(team)] == ["alert"]


async def test_budget_downgrades_to_efficient_at_90_percent(rig: Rig) -> None:
    team = await rig.team(budget="1")
    await rig.spend(team, "0.90")
    _, rec = await rig.gateway.complete_with_record(team, "uc", Tier.FRONTIER, request(), uid("r"))
    assert rec.requested_tier == "frontier" and rec.tier == "efficient" and rec.model == "small"
    assert "downgrade" in [k for _, k in await rig.gateway.ledger.events(team)]


async def test_budget_blocks_at_100_percent(rig: Rig) -> None:
    team = await rig.team(budget="1")
    await rig.spend(team, "1.00")
    with pytest.raises(BudgetExceeded):
        await rig.gateway.complete(team, "uc", Tier.EFFICIENT, request(), uid("r"))
    assert not rig.a.requests
    assert "block" in [k for _, k in await rig.gateway.ledger.events(team)]
    assert (await rig.calls(team))[0]["outcome"] == "budget_exceeded"
    assert await rig.gateway.limiter.used(team) == 0  # a refused call takes no tokens from the window


async def test_first_call_of_a_month_creates_its_ledger_row(rig: Rig) -> None:
    team = await rig.team(budget="1")
    async with rig.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM llm_budget_ledger WHERE team_id = $1", team) == 0
    _, rec = await rig.gateway.complete_with_record(team, "uc", Tier.STANDARD, request(), uid("r"))
    spent, reserved = await rig.ledger(team)
    assert spent == rec.cost_usd > 0 and reserved == 0  # the hold was settled at the actual cost


async def test_twenty_concurrent_calls_never_overspend_the_budget(rig: Rig) -> None:
    # Each call may cost up to (prompt estimate + 100) * $0.001 ~ $0.13; together 20 would need ~$2.6.
    team = await rig.team(budget="1")
    rig.a.latency_s = 0.3  # keep the calls in flight together while all 20 ask for their reservation
    results = await asyncio.gather(
        *(
            rig.gateway.complete(team, "uc", Tier.STANDARD, request(max_tokens=100), uid("r"))
            for _ in range(20)
        ),
        return_exceptions=True,
    )
    served = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(served) + len(refused) == 20 and refused and served
    spent, reserved = await rig.ledger(team)
    assert spent <= Decimal(1) and reserved == 0
    rows = await rig.calls(team)
    assert sum(r["cost_usd"] for r in rows) == spent
    assert sum(1 for r in rows if r["outcome"] == "ok") == len(served) == len(rig.a.requests)


# -- structured outputs -----------------------------------------------------------------------------
LAB_INPUT = LabUrgencyInput(test="Potassium", value="6.9", units="mmol/L", rule_urgency="critical")
LAB_EVIDENCE = [Evidence(id="Observation/k-1", kind="lab", text="K 6.9 mmol/L")]
VALID_LAB = (
    '{"urgency": "critical", "clinical_narrative": "Severe hyperkalaemia.", '
    '"suggested_action": "Repeat and treat.", "citations": ["Observation/k-1"]}'
)


async def test_run_task_validates_and_retries_once_with_the_error(rig: Rig) -> None:
    team = await rig.team(phi=True)
    rig.b.script = ["not json", VALID_LAB]
    parsed, rec = await rig.gateway.run_task(
        team, "lab-alert", Tier.STANDARD, LAB_INPUT, LAB_EVIDENCE, uid("r"), contains_phi=True
    )
    assert isinstance(parsed, LabUrgency) and parsed.urgency == "critical" and rec.citation_count == 1
    second = rig.b.requests[1]["messages"]
    assert isinstance(second, list) and "invalid" in str(second[-1])
    outcomes = [r["outcome"] for r in await rig.calls(team)]
    assert outcomes == ["invalid_output", "ok"]


async def test_run_task_raises_structured_output_failed_after_the_retry(rig: Rig) -> None:
    team = await rig.team(phi=True)
    rig.b.script = ['{"urgency": "whenever"}', '{"urgency": "soon"}']
    with pytest.raises(StructuredOutputFailed) as err:
        await rig.gateway.run_task(
            team,
            "lab-alert",
            Tier.STANDARD,
            LAB_INPUT,
            LAB_EVIDENCE,
            uid("r"),
            contains_phi=True,
        )
    assert "6.9" not in str(err.value)  # field names only, never values
    assert len(rig.b.requests) == 2

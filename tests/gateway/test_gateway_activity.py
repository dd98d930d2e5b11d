"""The llm.draft activity (ActivityEnvironment) on real Postgres: the offline default end to end, and
how gateway refusals become Temporal errors (retry after a delay, or not at all)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.llm import NOT_RETRYABLE_REFUSALS, DraftInput, DraftOutput, LlmActivities
from careflow.config import Settings
from careflow.llm.budget import month_of
from careflow.llm.ratelimit import TokenRateLimiter
from careflow.llm.teams import Team, TeamStore
from careflow.llm.types import Evidence, Tier
from workflows import retry_rules

EVIDENCE = [Evidence(id="Observation/k-1", kind="lab", text="Potassium 6.9 mmol/L (H)")]
LAB = {
    "test": "Potassium",
    "value": "6.9",
    "units": "mmol/L",
    "reference_range": "3.5-5.1",
    "abnormal_flags": ["HH"],
    "rule_urgency": "critical",
}


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert p is not None
    yield p
    await p.close()


async def new_team(pool: asyncpg.Pool, *, phi: bool = True, budget: str = "50", tpm: int = 200_000) -> str:
    team_id = f"team-{uuid.uuid4().hex[:8]}"
    await TeamStore(pool).create(
        Team(team_id=team_id, monthly_budget_usd=Decimal(budget), tokens_per_minute=tpm, phi_permitted=phi)
    )
    return team_id


def draft_input(team_id: str, **kw: object) -> DraftInput:
    fields: dict[str, object] = {
        "team_id": team_id,
        "use_case": "lab-alert",
        "tier": Tier.EFFICIENT,
        "task": "lab_urgency",
        "task_input": LAB,
        "evidence": EVIDENCE,
        "request_id": f"lab-alert-{uuid.uuid4().hex[:6]}:urgency",
    }
    fields.update(kw)
    return DraftInput.model_validate(fields)


async def run(pool: asyncpg.Pool, inp: DraftInput) -> DraftOutput:
    acts = LlmActivities(pool, Settings())  # the default configuration: offline provider on every tier
    return await ActivityEnvironment().run(acts.draft, inp)


async def test_draft_through_the_offline_default(pool: asyncpg.Pool) -> None:
    team = await new_team(pool)
    out = await run(pool, draft_input(team))
    assert out.provider == "offline" and out.model == "offline-efficient"
    assert out.output["urgency"] == "critical"
    assert out.cost_usd > 0


async def test_rate_limited_becomes_a_retry_after_the_window_delay(pool: asyncpg.Pool) -> None:
    team = await new_team(pool, tpm=2000)
    await TokenRateLimiter(pool).admit(team, 2000, 2000)
    with pytest.raises(ApplicationError) as err:
        await run(pool, draft_input(team))
    assert err.value.type == "RateLimited" and not err.value.non_retryable
    assert err.value.next_retry_delay is not None and 0 < err.value.next_retry_delay.total_seconds() <= 60


async def test_phi_refusal_is_not_retryable(pool: asyncpg.Pool) -> None:
    team = await new_team(pool, phi=False)
    with pytest.raises(ApplicationError) as err:
        await run(pool, draft_input(team))
    assert err.value.type == "PhiNotPermitted" and err.value.non_retryable


async def test_budget_block_is_not_retryable(pool: asyncpg.Pool) -> None:
    team = await new_team(pool, budget="1")
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO llm_budget_ledger (team_id, month, spent_usd) VALUES ($1, $2, 1)", team, month_of()
        )
    with pytest.raises(ApplicationError) as err:
        await run(pool, draft_input(team))
    assert err.value.type == "BudgetExceeded" and err.value.non_retryable


async def test_bad_task_input_is_not_retryable_and_quotes_no_values(pool: asyncpg.Pool) -> None:
    team = await new_team(pool)
    with pytest.raises(ApplicationError) as err:
        await run(pool, draft_input(team, task_input={"units": "mmol/L", "secret-ish": "Jane Doe"}))
    assert err.value.type == "BadLlmInput" and err.value.non_retryable
    assert "Jane" not in str(err.value) and "test" in str(err.value)


def test_frontier_gets_the_longest_timeout_and_refusals_are_not_retried() -> None:
    timeouts = {tier: retry_rules.llm_draft(tier, 2).options()["start_to_close_timeout"] for tier in Tier}
    assert timeouts[Tier.FRONTIER] > timeouts[Tier.STANDARD] > timeouts[Tier.EFFICIENT]
    policy = retry_rules.llm_draft(Tier.STANDARD, 5).options()["retry_policy"]
    # every error type the activity raises non-retryable is non-retryable in the policy too
    assert {*NOT_RETRYABLE_REFUSALS.values(), "BadLlmInput", "ProviderRejected"} == set(
        policy.non_retryable_error_types
    )

"""Which version answers a feature's requests (careflow/finetune/deployment.py): the canary split is
stable per request and close to its percent; shadow serves the champion and shadows the candidate;
the row and its event history in Postgres, each change exactly once per key, rollback puts the
champion before back."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.finetune import deployment as dep
from careflow.finetune.deployment import Deployment, Routing, Stage, route


def test_a_canary_takes_a_stable_tenth_of_the_requests() -> None:
    d = Deployment("note_draft", "3", "4", Stage.CANARY, 10)
    served = Counter(route(d, f"req-{i}").serves for i in range(20_000))
    assert served["4"] / 20_000 == pytest.approx(0.10, abs=0.01) and set(served) == {"3", "4"}
    assert all(route(d, f"req-{i}") == route(d, f"req-{i}") for i in range(100))  # a retry lands alike
    assert route(Deployment("note_draft", "3", "4", Stage.CANARY, 0), "req-1").serves == "3"
    assert route(Deployment("note_draft", "3", "4", Stage.CANARY, 100), "req-1").serves == "4"


def test_shadow_serves_the_champion_and_shadows_the_candidate() -> None:
    assert route(Deployment("note_draft", "3", "4", Stage.SHADOW), "r") == Routing("3", shadow="4")
    assert route(Deployment("note_draft", "3"), "r") == Routing("3")
    assert route(Deployment("note_draft"), "r") == Routing(None)  # no deployment: the tier route


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(Settings())
    yield p
    await p.close()


async def test_the_row_moves_through_shadow_canary_promotion_and_rollback(pool: asyncpg.Pool) -> None:
    feature = f"test-feature-{uuid.uuid4().hex[:8]}"
    wid = f"model-promotion-{feature}-v2"
    assert await dep.current(pool, feature) == Deployment(feature)
    await dep.promote(pool, feature, "1", "seed", f"{wid}/seed")
    shadow = await dep.stage(pool, feature, "2", Stage.SHADOW, "saga", f"{wid}/shadow")
    assert shadow == Deployment(feature, "1", "2", Stage.SHADOW, 0)
    again = await dep.stage(pool, feature, "2", Stage.SHADOW, "saga", f"{wid}/shadow")  # a retry
    assert again == shadow
    canary = await dep.stage(pool, feature, "2", Stage.CANARY, "saga", f"{wid}/canary")
    assert canary == Deployment(feature, "1", "2", Stage.CANARY, 10)
    assert await dep.promote(pool, feature, "2", "saga", f"{wid}/promote") == Deployment(feature, "2")
    back = await dep.rollback(pool, feature, "1", "saga", "golden score fell 14 %", f"{wid}/rollback")
    assert back == Deployment(feature, "1")
    events = await dep.history(pool, feature)
    assert [e["action"] for e in events] == ["promote", "shadow", "canary", "promote", "rollback"]
    assert events[-1]["reason"] == "golden score fell 14 %" and events[-1]["actor"] == "saga"

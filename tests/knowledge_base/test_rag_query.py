# ruff: noqa: F811  (pytest fixtures imported from tests.support.kb)
"""The query path end to end over the ingested starter knowledge base: retrieval, the gateway's offline
provider, validation, the semantic cache, audit, the HTTP API, and LLM failures."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import httpx
import pytest
import pytest_asyncio

from careflow.config import Settings
from careflow.kb import store
from careflow.kb.cache import SemanticCache
from careflow.kb.embed import get_embedder
from careflow.kb.rag import AnswerUnavailable, NoEvidence, RagService, query_text, retrieve
from careflow.kb.settings import KbSettings
from careflow.llm.config import GatewayConfig, Price, Target, TierRoute
from careflow.llm.gateway import Gateway
from careflow.llm.tasks import CLINICAL_DISCLAIMER
from careflow.llm.teams import Team, TeamStore, sign_team_token
from careflow.llm.types import Tier
from starters.api.app import create_app
from tests.support.breaker_proc import HttpProvider, Upstream, serve_upstream
from tests.support.cli import run_careflow
from tests.support.kb import ROOT, StarterKb, clear_cache, kb_pool, starter_kb  # noqa: F401
from tests.support.serving import serve

CAP = "What is the empiric antibiotic regimen for community-acquired pneumonia on a medical ward?"
CAP_PARAPHRASE = (
    "Which empiric antibiotic regimen is recommended for community-acquired pneumonia on a medical ward?"
)
CAP_ALLERGY = (
    "What is the empiric antibiotic regimen for community-acquired pneumonia on a medical ward "
    "in penicillin allergy?"
)


@pytest_asyncio.fixture
async def kb(starter_kb: StarterKb) -> StarterKb:
    await clear_cache(starter_kb.pool, starter_kb.tenant_id)
    return starter_kb


def offline_service(pool: asyncpg.Pool, **settings: object) -> RagService:
    return RagService(pool, Gateway.from_settings(pool, Settings()), settings=KbSettings(**settings))


async def retrieved_ids(kb: StarterKb, question: str) -> set[str]:
    [vector] = await get_embedder().aencode([query_text(question)])
    return {c.chunk_id for c in await retrieve(kb.pool, kb.tenant_id, question, vector, KbSettings())}


async def test_answer_cites_two_or_three_retrieved_chunks_with_the_disclaimer(kb: StarterKb) -> None:
    service = offline_service(kb.pool)
    response = await service.answer(CAP, kb.tenant_id)
    assert not response.cached and not response.stale and response.cached_at is None
    assert 2 <= len(response.citations) <= 3, response.citations
    assert {c.chunk_id for c in response.citations} <= await retrieved_ids(kb, CAP)
    assert "cap-adult-inpatient" in {c.document_id for c in response.citations}
    for c in response.citations:
        assert c.document_title and c.section and c.source_organization
        datetime.strptime(c.effective_date, "%Y-%m-%d")  # an ISO date
    assert response.disclaimer == CLINICAL_DISCLAIMER
    assert response.answer and response.latency_ms > 0


async def test_second_ask_and_a_paraphrase_come_from_the_cache(kb: StarterKb) -> None:
    service = offline_service(kb.pool)
    first = await service.answer(CAP, kb.tenant_id)
    second = await service.answer(CAP, kb.tenant_id)
    assert second.cached and not second.stale and second.cached_at is not None
    assert second.answer == first.answer and second.citations == first.citations
    paraphrase = await service.answer(CAP_PARAPHRASE, kb.tenant_id)
    assert paraphrase.cached and paraphrase.answer == first.answer
    # The allergy variant is as similar, but its decisive terms differ: answered afresh.
    allergy = await service.answer(CAP_ALLERGY, kb.tenant_id)
    assert not allergy.cached


async def test_patient_context_bypasses_the_cache(kb: StarterKb) -> None:
    service = offline_service(kb.pool)
    await service.answer(CAP, kb.tenant_id)  # cached without patient context
    with_patient = [await service.answer(CAP, kb.tenant_id, patient_context=True) for _ in range(2)]
    assert not any(r.cached for r in with_patient)
    async with kb.pool.acquire() as conn:
        entries = await conn.fetchval(
            "SELECT count(*) FROM kb_answer_cache WHERE tenant_id = $1 AND question = $2", kb.tenant_id, CAP
        )
    assert entries == 1  # only the answer without patient context was stored


async def test_queries_are_audited_without_the_question_text(kb: StarterKb) -> None:
    service = offline_service(kb.pool)
    response = await service.answer(CAP, kb.tenant_id)
    async with kb.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM audit_events WHERE request_id = $1", response.request_id)
    assert row is not None and row["event_type"] == "ai-inference" and row["outcome"] == "success"
    detail = json.loads(row["detail"])
    assert detail["question_chars"] == str(len(CAP)) and detail["tenant_id"] == kb.tenant_id
    assert "pneumonia" not in row["detail"].lower()


async def test_another_tenant_gets_no_answer_and_no_citations(kb: StarterKb) -> None:
    service = offline_service(kb.pool)
    other = f"empty-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NoEvidence):
        await service.answer(CAP, other)
    [vector] = await get_embedder().aencode([query_text(CAP)])
    assert await store.search(kb.pool, other, vector, k=5) == []


# -- LLM failures: a real gateway over HTTP to a local upstream that misbehaves -----------------------
@dataclass
class FailingModel:
    upstream: Upstream
    gateway: Gateway


@pytest_asyncio.fixture
async def failing_model(kb: StarterKb) -> AsyncIterator[FailingModel]:
    async with serve_upstream(Upstream(default=503)) as up:
        provider = HttpProvider(f"down-{uuid.uuid4().hex[:6]}", up.url)
        routes = {t: TierRoute(primary=Target(provider=provider.name, model="m")) for t in Tier}
        prices = {"m": Price(input=Decimal(1), output=Decimal(2))}
        gateway = Gateway(kb.pool, {provider.name: provider}, GatewayConfig(routes=routes, prices=prices))
        try:
            yield FailingModel(up, gateway)
        finally:
            await provider.aclose()


async def test_llm_failure_serves_the_closest_cached_answer_marked_stale(
    kb: StarterKb, failing_model: FailingModel
) -> None:
    fresh = await offline_service(kb.pool).answer(CAP, kb.tenant_id)
    eight_days_on = datetime.now(UTC) + timedelta(days=8)  # past the guideline TTL
    settings = KbSettings()
    expired_cache = SemanticCache(kb.pool, settings=settings, clock=lambda: eight_days_on)
    down = RagService(kb.pool, failing_model.gateway, settings=settings, cache=expired_cache)
    response = await down.answer(CAP_PARAPHRASE, kb.tenant_id)
    assert failing_model.upstream.requests, "the model was asked first"
    assert response.cached and response.stale
    assert response.answer == fresh.answer and response.citations == fresh.citations


async def test_llm_failure_without_an_agreeing_cached_answer_is_a_clear_error(
    kb: StarterKb, failing_model: FailingModel
) -> None:
    await offline_service(kb.pool).answer(CAP, kb.tenant_id)
    down = RagService(kb.pool, failing_model.gateway)
    with pytest.raises(AnswerUnavailable) as err:
        await down.answer(CAP_ALLERGY, kb.tenant_id)  # the cached plain-CAP answer must not stand in
    assert "pneumonia" not in str(err.value).lower()


async def test_llm_timeout_is_a_clear_error(kb: StarterKb, failing_model: FailingModel) -> None:
    failing_model.upstream.default, failing_model.upstream.latency_s = "{}", 5.0
    slow = RagService(kb.pool, failing_model.gateway, settings=KbSettings(llm_timeout_seconds=0.3))
    with pytest.raises(AnswerUnavailable, match="timeout"):
        await slow.answer(CAP, kb.tenant_id)


@pytest.mark.parametrize("payload", ["not json at all", "uncited", "invented"])
async def test_an_invalid_or_uncited_model_answer_is_never_returned(
    kb: StarterKb, failing_model: FailingModel, payload: str
) -> None:
    answers = {
        "not json at all": "Amoxicillin, probably.",
        "uncited": json.dumps(
            {"answer": "Give amoxicillin.", "citations": [], "disclaimer": CLINICAL_DISCLAIMER}
        ),
        "invented": json.dumps(
            {
                "answer": "Give amoxicillin.",
                "citations": [{"evidence_id": "kb:made-up@v1#1/0", "document_title": "Made up"}],
                "disclaimer": CLINICAL_DISCLAIMER,
            }
        ),
    }
    failing_model.upstream.default = answers[payload]
    service = RagService(kb.pool, failing_model.gateway)
    expected = NoEvidence if payload == "uncited" else AnswerUnavailable
    with pytest.raises(expected):
        await service.answer(CAP, kb.tenant_id)
    async with kb.pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM kb_answer_cache WHERE tenant_id = $1", kb.tenant_id)
            == 0
        )


# -- HTTP API -------------------------------------------------------------------------------------------
@dataclass
class Api:
    url: str
    pool: asyncpg.Pool

    tenant_id: str

    async def token(self, tpm: int = 200_000, kb_tenants: list[str] | None = None) -> str:
        team_id = f"rag-{uuid.uuid4().hex[:8]}"
        await TeamStore(self.pool).create(
            Team(
                team_id=team_id,
                monthly_budget_usd=Decimal(100),
                tokens_per_minute=tpm,
                kb_tenants=[self.tenant_id] if kb_tenants is None else kb_tenants,
            )
        )
        return sign_team_token(GatewayConfig().signing_secret(Settings()), team_id, ttl_days=1)

    async def query(self, token: str | None, body: dict[str, object]) -> httpx.Response:
        headers = {"x-api-key": token} if token else {}
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as http:
            return await http.post("/v1/rag/query", json=body, headers=headers)


@pytest_asyncio.fixture
async def api(kb: StarterKb) -> AsyncIterator[Api]:
    async with serve(create_app(Settings())) as url:
        yield Api(url, kb.pool, kb.tenant_id)


async def test_api_answers_with_citations_then_from_the_cache(api: Api, kb: StarterKb) -> None:
    token = await api.token()
    body = {"question": CAP, "tenant_id": kb.tenant_id}
    first = await api.query(token, body)
    assert first.status_code == 200, first.text
    data = first.json()
    assert 2 <= len(data["citations"]) <= 3 and data["cached"] is False and data["disclaimer"]
    assert set(data["citations"][0]) >= {"document_title", "section", "effective_date", "source_organization"}
    second = (await api.query(token, body)).json()
    assert second["cached"] is True and second["cached_at"] and second["answer"] == data["answer"]


async def test_api_cross_tenant_returns_no_citations(api: Api, kb: StarterKb) -> None:
    other = f"other-{uuid.uuid4().hex[:6]}"
    token = await api.token(kb_tenants=[kb.tenant_id, other])
    await api.query(token, {"question": CAP, "tenant_id": kb.tenant_id})  # cached for the KB's tenant
    r = await api.query(token, {"question": CAP, "tenant_id": other})
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error" and "citations" not in r.json()


async def test_api_refuses_a_tenant_the_team_may_not_query(api: Api, kb: StarterKb) -> None:
    outsider = await api.token(kb_tenants=["default"])
    r = await api.query(outsider, {"question": CAP, "tenant_id": kb.tenant_id})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert kb.tenant_id in r.json()["error"]["message"] and "citations" not in r.json()
    # without tenant_id a team with one tenant queries that one; with several it must name one
    own = await api.query(await api.token(), {"question": CAP})
    assert own.status_code == 200 and own.json()["citations"]
    several = await api.query(await api.token(kb_tenants=[kb.tenant_id, "default"]), {"question": CAP})
    assert several.status_code == 400 and "tenant_id" in several.json()["error"]["message"]


async def test_api_uses_the_gateway_auth_and_rate_limit(api: Api, kb: StarterKb) -> None:
    body = {"question": CAP, "tenant_id": kb.tenant_id}
    assert (await api.query(None, body)).status_code == 401
    assert (await api.query("not-a-token", body)).status_code == 401
    starved = await api.token(tpm=5)
    limited = await api.query(starved, body)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    token = await api.token()
    assert (await api.query(token, {"question": ""})).status_code == 400
    assert (await api.query(token, {"question": CAP, "tenant_id": "Bad Tenant!"})).status_code == 400


def careflow(*args: str) -> subprocess.CompletedProcess[str]:
    return run_careflow(*args)


async def test_careflow_ask_prints_the_answer_with_citations(kb: StarterKb) -> None:
    proc = await asyncio.to_thread(careflow, "ask", CAP, "--tenant", kb.tenant_id, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["citations"] and data["disclaimer"] == CLINICAL_DISCLAIMER and data["cached"] is False
    # The human-readable answer keeps its inline citation markers (Rich once took "[kb:...]" for markup).
    shown = await asyncio.to_thread(careflow, "ask", CAP, "--tenant", kb.tenant_id)
    markers = re.findall(r"\[[^\]]+\]", data["answer"])
    assert markers and all(m in shown.stdout for m in markers), shown.stdout[:2000]
    nothing = await asyncio.to_thread(careflow, "ask", CAP, "--tenant", f"none-{uuid.uuid4().hex[:6]}")
    assert nothing.returncode == 1 and "no answer" in nothing.stdout

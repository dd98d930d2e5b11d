# ruff: noqa: F811  (pytest fixtures imported from tests.support.kb)
"""The clinically safe semantic cache on the session Postgres, with real MiniLM embeddings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from careflow.kb.cache import SemanticCache, invalidate_documents, tenant_transaction
from careflow.kb.clinical_terms import cache_key_text
from careflow.kb.embed import get_embedder
from careflow.kb.settings import KbSettings
from tests.support.kb import kb_pool  # noqa: F401

PLAIN = "What is the first-line antibiotic for community-acquired pneumonia?"
PARAPHRASE = "Which antibiotic is first-line for community-acquired pneumonia?"
ALLERGY = "What is the first-line antibiotic for community-acquired pneumonia in penicillin allergy?"
ABBREVIATED = "What is the first-line antibiotic for CAP?"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def vec(question: str) -> list[float]:
    return get_embedder().encode_one(cache_key_text(question))  # as the query path embeds it


def sim(a: str, b: str) -> float:
    return sum(x * y for x, y in zip(vec(a), vec(b), strict=True))


def answer(text: str) -> dict[str, object]:
    return {"answer": text, "citations": [], "disclaimer": "verify"}


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_paraphrase_above_threshold_with_agreeing_terms_hits(kb_pool: asyncpg.Pool) -> None:
    cache, t = SemanticCache(kb_pool), tenant()
    assert cache.threshold == 0.95  # the default
    await cache.store(t, PLAIN, vec(PLAIN), answer("plain"), ["cap"], ["guideline"])
    for question in (PARAPHRASE, PLAIN, ABBREVIATED):
        hit = await cache.lookup(t, question, vec(question))
        assert hit is not None, question
        assert hit.answer["answer"] == "plain" and hit.question == PLAIN and not hit.stale
        assert hit.similarity >= 0.95


async def test_allergy_distractor_never_hits_even_above_the_threshold(kb_pool: asyncpg.Pool) -> None:
    # Similarity alone would serve the plain answer: the distractor is closer than the threshold used.
    similarity = sim(PLAIN, ALLERGY)
    threshold = similarity - 0.02
    cache, t = SemanticCache(kb_pool, threshold=threshold), tenant()
    await cache.store(t, PLAIN, vec(PLAIN), answer("plain"), ["cap"], ["guideline"])
    assert await cache.lookup(t, ALLERGY, vec(ALLERGY)) is None
    assert await cache.closest_stale(t, ALLERGY, vec(ALLERGY)) is None
    # ... and with both cached, each question gets its own answer, whichever is nearer.
    await cache.store(t, ALLERGY, vec(ALLERGY), answer("allergy"), ["cap", "pcn"], ["guideline"])
    plain, allergy = (
        await cache.lookup(t, PARAPHRASE, vec(PARAPHRASE)),
        await cache.lookup(t, ALLERGY, vec(ALLERGY)),
    )
    assert plain is not None and plain.answer["answer"] == "plain"
    assert allergy is not None and allergy.answer["answer"] == "allergy"


async def test_ttl_follows_the_shortest_lived_cited_doc_type(kb_pool: asyncpg.Pool) -> None:
    clock, t = Clock(T0), tenant()
    cache = SemanticCache(kb_pool, clock=clock)
    formulary_q = "Is ertapenem on the formulary for community-acquired pneumonia?"
    guideline_q = "How long should community-acquired pneumonia be treated?"
    mixed_q = "Which formulary antibiotic treats community-acquired pneumonia in the ICU?"
    await cache.store(t, formulary_q, vec(formulary_q), answer("f"), ["formulary"], ["formulary"])
    await cache.store(t, guideline_q, vec(guideline_q), answer("g"), ["cap"], ["guideline"])
    await cache.store(t, mixed_q, vec(mixed_q), answer("m"), ["cap", "formulary"], ["guideline", "formulary"])

    async def live(q: str) -> bool:
        return await cache.lookup(t, q, vec(q)) is not None

    clock.now = T0 + timedelta(hours=23)
    assert [await live(q) for q in (formulary_q, guideline_q, mixed_q)] == [True, True, True]
    clock.now = T0 + timedelta(days=2)
    assert [await live(q) for q in (formulary_q, guideline_q, mixed_q)] == [False, True, False]
    stale = await cache.closest_stale(t, formulary_q, vec(formulary_q))
    assert stale is not None and stale.stale and stale.answer["answer"] == "f"
    assert stale.expires_at - stale.created_at == timedelta(days=1)
    clock.now = T0 + timedelta(days=8)
    assert not await live(guideline_q)


async def test_ttl_is_configurable() -> None:
    settings = KbSettings(cache_ttl_hours={"guideline": 2})
    assert settings.ttl_for(["guideline"]) == timedelta(hours=2)
    assert settings.ttl_for(["protocol"]) == timedelta(days=7)
    assert settings.ttl_for(["something-new"]) == timedelta(hours=2)  # unknown: the shortest


async def test_invalidate_documents_retires_only_entries_citing_them(kb_pool: asyncpg.Pool) -> None:
    cache, t, other = SemanticCache(kb_pool), tenant(), tenant()
    questions = {
        "x": "What is the heparin infusion starting dose?",
        "y": "When should enoxaparin be held before surgery?",
        "xz": "How is warfarin reversed before an urgent procedure?",
    }
    cited = {"x": ["doc-x"], "y": ["doc-y"], "xz": ["doc-x", "doc-z"]}
    for key, q in questions.items():
        await cache.store(t, q, vec(q), answer(key), cited[key], ["protocol"])
    await cache.store(other, questions["x"], vec(questions["x"]), answer("other"), ["doc-x"], ["protocol"])

    # Inside a caller's transaction (an ingest swapping chunks) the invalidation commits with it.
    async with kb_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        assert await invalidate_documents(conn, t, ["doc-x"]) == 2
        await tx.rollback()
    assert await cache.lookup(t, questions["x"], vec(questions["x"])) is not None

    assert await invalidate_documents(kb_pool, t, ["doc-x"]) == 2
    assert await invalidate_documents(kb_pool, t, ["doc-x"]) == 0  # already retired
    for key, q in questions.items():
        hit = await cache.lookup(t, q, vec(q))
        assert (hit is not None) == (key == "y"), key
        assert await cache.closest_stale(t, q, vec(q)) is None or key == "y"  # never served stale either
    hit = await cache.lookup(other, questions["x"], vec(questions["x"]))
    assert hit is not None and hit.answer["answer"] == "other"
    # A new answer for the same question may be cached again.
    await cache.store(t, questions["x"], vec(questions["x"]), answer("x2"), ["doc-x"], ["protocol"])
    hit = await cache.lookup(t, questions["x"], vec(questions["x"]))
    assert hit is not None and hit.answer["answer"] == "x2"


async def test_cross_tenant_never_hits(kb_pool: asyncpg.Pool) -> None:
    cache, a, b = SemanticCache(kb_pool), tenant(), tenant()
    await cache.store(a, PLAIN, vec(PLAIN), answer("a"), ["cap"], ["guideline"])
    assert await cache.lookup(b, PLAIN, vec(PLAIN)) is None
    assert await cache.closest_stale(b, PLAIN, vec(PLAIN)) is None
    assert await cache.lookup(a, PLAIN, vec(PLAIN)) is not None


async def test_row_level_security_holds_the_application_role_to_its_tenant(kb_pool: asyncpg.Pool) -> None:
    cache, a, b = SemanticCache(kb_pool), tenant(), tenant()
    await cache.store(a, PLAIN, vec(PLAIN), answer("a"), ["cap"], ["guideline"])

    async def visible_as_app(session_tenant: str) -> int:
        async with tenant_transaction(kb_pool, session_tenant) as conn:
            await conn.execute("SET LOCAL ROLE careflow_app")
            # No tenant filter in the SQL: only row-level security stands between the tenants.
            return int(await conn.fetchval("SELECT count(*) FROM kb_answer_cache WHERE question = $1", PLAIN))

    assert await visible_as_app(a) == 1
    assert await visible_as_app(b) == 0
    async with tenant_transaction(kb_pool, b) as conn:
        await conn.execute("SET LOCAL ROLE careflow_app")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # WITH CHECK: no writes into another tenant
            await conn.execute(
                """INSERT INTO kb_answer_cache (tenant_id, question, question_key, decisive_terms, embedding,
                                                answer, document_ids, doc_types, expires_at)
                   VALUES ($1, 'q', 'k', '{}', $2, '{}', '{}', '{}', now())""",
                a,
                vec(PLAIN),
            )


async def test_storing_the_same_question_again_replaces_the_live_entry(kb_pool: asyncpg.Pool) -> None:
    cache, t = SemanticCache(kb_pool), tenant()
    first = await cache.store(t, PLAIN, vec(PLAIN), answer("one"), ["cap"], ["guideline"])
    second = await cache.store(t, PLAIN, vec(PLAIN), answer("two"), ["cap"], ["guideline"])
    assert first == second
    hit = await cache.lookup(t, PLAIN, vec(PLAIN))
    assert hit is not None and hit.answer["answer"] == "two"

"""The knowledge-base query path: a clinician's question -> a short answer with 2-3 citations.

    semantic cache (never with patient context) -> on a miss: embed -> ANN candidates within the tenant,
    re-ranked with a lexical bonus, top 5 -> gateway task `rag_answer` (Standard tier, evidence as a
    cacheable prompt block) -> validation (every citation names a retrieved chunk, disclaimer present,
    at least one citation) -> cache -> response

Questions are embedded with abbreviations and brand names spelt out (`query_text`); the cache embeds a
filler-free key text (`clinical_terms.cache_key_text`) and reuses an answer only when the clinically
decisive terms agree (careflow/kb/cache.py).

Citation metadata in the response comes from the retrieved chunks, never from the model's text.  When
the LLM fails or misses its deadline, the closest cached answer is served marked stale; without one the
caller gets `AnswerUnavailable`.  An uncited answer is never returned: when the passages do not answer
the question the caller gets `NoEvidence`.  One audit event per query, with ids and sizes only.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from careflow.audit.trail import PostgresAuditTrail
from careflow.kb import store
from careflow.kb.cache import CacheHit, SemanticCache
from careflow.kb.clinical_terms import FILLER_WORDS, cache_key_text, canonical_question
from careflow.kb.embed import Embedder, get_embedder
from careflow.kb.settings import KbSettings
from careflow.kb.store import RetrievedChunk
from careflow.llm.errors import ProvidersUnavailable, StructuredOutputFailed
from careflow.llm.gateway import Gateway
from careflow.llm.tasks import RagAnswer, RagAnswerInput, SourceMetadata
from careflow.llm.types import ProviderError, Tier
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType, AuditOutcome
from careflow.security.logging import get_logger

log = get_logger(__name__)

MAX_QUESTION_CHARS = 2000


class RagError(Exception):
    """Base of the query path's failures; messages carry ids and counts, never the question."""

    code = "rag_error"


class NoEvidence(RagError):
    """No knowledge-base passage of the tenant answers the question: there is nothing to cite."""

    code = "no_evidence"


class AnswerUnavailable(RagError):
    """The LLM failed or timed out and no cached answer agrees with the question."""

    code = "answer_unavailable"


class InvalidAnswer(RagError):
    """The model's answer failed validation (a citation outside the retrieved chunks, no disclaimer)."""

    code = "invalid_answer"


class Citation(BaseModel):
    document_title: str
    section: str
    effective_date: str
    source_organization: str
    document_id: str
    chunk_id: str


class RagResponse(BaseModel):
    answer: str
    citations: list[Citation]
    disclaimer: str
    cached: bool = False
    cached_at: datetime | None = None
    stale: bool = False
    latency_ms: float = 0.0
    request_id: str = ""
    missing_information: list[str] = Field(default_factory=list)


def query_text(question: str) -> str:
    """What the query path embeds, for retrieval and the cache alike: abbreviations and brand names
    spelt out ("CAP" -> "community-acquired pneumonia"), so they meet the documents' wording."""
    return canonical_question(question)


_WORD = re.compile(r"[a-z0-9]+")
_NOT_CONTENT = FILLER_WORDS | {
    "and",
    "or",
    "if",
    "after",
    "before",
    "not",
    "no",
    "patient",
    "patients",
    "dose",
}


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _NOT_CONTENT}


async def retrieve(
    pool: asyncpg.Pool, tenant_id: str, question: str, vector: list[float], settings: KbSettings
) -> list[RetrievedChunk]:
    """The top-k chunks for a question: ANN candidates within the tenant, re-ranked by cosine similarity
    plus a lexical bonus (the share of the question's content words, abbreviations spelt out, that the
    chunk's title, section and text contain).  MiniLM alone often ranks a sibling section first."""
    candidates = await store.search(
        pool, tenant_id, vector, k=max(settings.top_k, settings.rerank_candidates)
    )
    words = _content_words(query_text(question))
    if not words or settings.lexical_weight == 0:
        return candidates[: settings.top_k]

    def score(c: RetrievedChunk) -> float:
        have = _content_words(f"{c.document_title} {c.section} {c.text}")
        return c.score + settings.lexical_weight * len(words & have) / len(words)

    return sorted(candidates, key=score, reverse=True)[: settings.top_k]


def validate_answer(parsed: RagAnswer, retrieved: dict[str, RetrievedChunk]) -> list[Citation]:
    """The answer's citations as response citations; raises when any check fails."""
    unknown = [c.evidence_id for c in parsed.citations if c.evidence_id not in retrieved]
    if unknown:
        raise InvalidAnswer(f"citations outside the retrieved chunks: {', '.join(unknown)}")
    if not parsed.disclaimer.strip():
        raise InvalidAnswer("clinical disclaimer missing")
    if not parsed.citations:
        raise NoEvidence("the retrieved passages do not answer the question")
    citations: dict[str, Citation] = {}
    for c in parsed.citations:
        chunk = retrieved[c.evidence_id]
        citations.setdefault(
            chunk.chunk_id,
            Citation(
                document_title=chunk.document_title,
                section=chunk.section,
                effective_date=chunk.effective_date,
                source_organization=chunk.source_organization,
                document_id=chunk.document_id,
                chunk_id=chunk.chunk_id,
            ),
        )
    return list(citations.values())


class RagService:
    """One per process: holds the pool, the gateway, the cache and the embedder."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        gateway: Gateway,
        *,
        settings: KbSettings | None = None,
        cache: SemanticCache | None = None,
        embedder: Embedder | None = None,
        audit: PostgresAuditTrail | None = None,
    ) -> None:
        self.pool = pool
        self.gateway = gateway
        self.settings = settings or KbSettings()
        self.cache = cache or SemanticCache(pool, settings=self.settings)
        self.embedder = embedder or get_embedder()
        self.audit = audit or PostgresAuditTrail(pool)

    async def answer(
        self,
        question: str,
        tenant_id: str = "default",
        *,
        patient_context: bool = False,
        team_id: str | None = None,
        actor: str = "careflow-kb",
        request_id: str | None = None,
    ) -> RagResponse:
        started = time.perf_counter()
        request_id = request_id or f"rag-{uuid.uuid4().hex}"
        question = question.strip()
        if not question or len(question) > MAX_QUESTION_CHARS:
            raise ValueError(f"a question has 1 to {MAX_QUESTION_CHARS} characters")
        use_cache = self.settings.cache_enabled and not patient_context
        facts: dict[str, str] = {
            "operation": "kb.query",
            "tenant_id": tenant_id,
            "question_chars": str(len(question)),
            "patient_context": str(patient_context).lower(),
        }
        try:
            # The cache embeds the question's key text (fillers dropped, see clinical_terms): a hit
            # costs that one embedding; retrieval embeds the question itself, on a miss only.
            key = (await self.embedder.aencode([cache_key_text(question)]))[0] if use_cache else None
            hit = await self.cache.lookup(tenant_id, question, key) if key is not None else None
            if hit is not None:
                response = _from_cache(hit, request_id)
            else:
                [vector] = await self.embedder.aencode([query_text(question)])
                response = await self._generate(
                    question, tenant_id, vector, key, patient_context, team_id, request_id
                )
        except Exception as exc:
            facts["error"] = getattr(exc, "code", type(exc).__name__)
            await self._audit(actor, request_id, facts, AuditOutcome.FAILURE, patient_context)
            raise
        response.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        facts.update(
            cached=str(response.cached).lower(),
            stale=str(response.stale).lower(),
            citations=str(len(response.citations)),
            documents=",".join(sorted({c.document_id for c in response.citations})),
        )
        await self._audit(actor, request_id, facts, AuditOutcome.SUCCESS, patient_context)
        return response

    async def _generate(
        self,
        question: str,
        tenant_id: str,
        vector: list[float],
        key: list[float] | None,  # the cache's embedding of the question; None: the cache is not used
        patient_context: bool,
        team_id: str | None,
        request_id: str,
    ) -> RagResponse:
        chunks = await retrieve(self.pool, tenant_id, question, vector, self.settings)
        if not chunks:
            raise NoEvidence(f"tenant {tenant_id!r} has no knowledge-base passage for this question")
        evidence = [store.as_evidence(c) for c in chunks]
        retrieved = {e.id: c for e, c in zip(evidence, chunks, strict=True)}
        task_input = RagAnswerInput(
            question=question,
            sources={
                e.id: SourceMetadata(
                    document_title=c.document_title, section=c.section, effective_date=c.effective_date
                )
                for e, c in zip(evidence, chunks, strict=True)
            },
        )
        try:
            parsed, _ = await asyncio.wait_for(
                self.gateway.run_task(
                    team_id or self.settings.team_id,
                    self.settings.use_case,
                    Tier.STANDARD,
                    task_input,
                    evidence,
                    request_id,
                    contains_phi=patient_context,
                ),
                self.settings.llm_timeout_seconds,
            )
            assert isinstance(parsed, RagAnswer)
            citations = validate_answer(parsed, retrieved)
        except (
            TimeoutError,
            ProvidersUnavailable,
            StructuredOutputFailed,
            ProviderError,
            InvalidAnswer,
        ) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else getattr(exc, "code", type(exc).__name__)
            log.warning("kb answer failed", request_id=request_id, reason=reason)
            if key is not None:
                stale = await self.cache.closest_stale(tenant_id, question, key)
                if stale is not None:
                    return _from_cache(stale, request_id)
            raise AnswerUnavailable(f"request {request_id}: the model did not answer ({reason})") from exc

        response = RagResponse(
            answer=parsed.answer,
            citations=citations,
            disclaimer=parsed.disclaimer,
            request_id=request_id,
            missing_information=parsed.missing_information,
        )
        if key is not None:
            cited = {c.chunk_id for c in citations}
            await self.cache.store(
                tenant_id,
                question,
                key,
                _cache_payload(response),
                # Any retrieved document's update may change the answer: all of them invalidate it.
                document_ids=[c.document_id for c in chunks],
                doc_types=[c.doc_type for c in chunks if c.chunk_id in cited],
            )
        return response

    async def _audit(
        self, actor: str, request_id: str, facts: dict[str, str], outcome: AuditOutcome, patient_context: bool
    ) -> None:
        event = AuditEvent(
            event_type=AuditEventType.AI_INFERENCE,
            actor=actor,
            action=AuditAction.EXECUTE,
            outcome=outcome,
            resource_type="KnowledgeBaseQuery",
            request_id=request_id,
            detail=facts,
        )
        try:
            await self.audit.record(event)
        except (OSError, asyncpg.PostgresError) as exc:
            # A query with patient context is not answered without its audit row.
            if patient_context:
                raise
            log.error("kb query audit failed", request_id=request_id, error=type(exc).__name__)


async def answer(
    question: str,
    tenant_id: str = "default",
    *,
    patient_context: bool = False,
    pool: asyncpg.Pool,
    gateway: Gateway,
    settings: KbSettings | None = None,
) -> RagResponse:
    """One question through a throwaway service (processes that answer many keep a RagService)."""
    service = RagService(pool, gateway, settings=settings)
    return await service.answer(question, tenant_id, patient_context=patient_context)


def _cache_payload(response: RagResponse) -> dict[str, Any]:
    return response.model_dump(
        mode="json", include={"answer", "citations", "disclaimer", "missing_information"}
    )


def _from_cache(hit: CacheHit, request_id: str) -> RagResponse:
    return RagResponse.model_validate(
        {
            **hit.answer,
            "cached": True,
            "cached_at": hit.created_at,
            "stale": hit.stale,
            "request_id": request_id,
        }
    )

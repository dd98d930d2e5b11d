"""The clinically safe semantic cache of knowledge-base answers (table kb_answer_cache, migration 0009).

A cached answer is reused only when all of these hold:
- same tenant (SQL filter, backed by forced row-level security);
- cosine similarity of the question embeddings >= the threshold (default 0.95);
- the clinically decisive terms agree (`clinical_terms.guard_agrees`): similarity alone would serve the
  plain CAP answer to "CAP in penicillin allergy";
- not expired (TTL of the shortest-lived cited doc type) and not invalidated (a cited document changed).

Queries with patient context never reach the cache (careflow/kb/rag.py).  `closest_stale` ignores the
TTL (never the invalidation): it is the fallback when the LLM cannot answer, and its hit says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from careflow.kb.clinical_terms import decisive_terms
from careflow.kb.settings import KbSettings

# Nearest entries fetched per lookup: the guard may reject the closest few (e.g. an allergy variant).
_CANDIDATES = 10

Clock = Callable[[], datetime | None]


@dataclass(frozen=True)
class CacheHit:
    entry_id: int
    question: str  # the cached question (not the one asked)
    answer: dict[str, Any]
    document_ids: list[str]
    doc_types: list[str]
    similarity: float
    created_at: datetime
    expires_at: datetime
    stale: bool  # expired: served only as the fallback when the LLM failed


def question_key(question: str) -> str:
    normal = " ".join(question.lower().split())
    return hashlib.sha256(normal.encode()).hexdigest()


def reusable(similarity: float, question: str, cached_question: str, threshold: float) -> bool:
    """The cache's decision rule for one candidate (also what `careflow kb eval` measures)."""
    return similarity >= threshold and decisive_terms(question) == decisive_terms(cached_question)


@asynccontextmanager
async def tenant_transaction(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: str
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction (a savepoint on a connection already in one) whose row-level security admits
    `tenant_id` only."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('careflow.tenant_id', $1, true)", tenant_id)
            yield conn
    else:
        async with db.transaction():
            await db.execute("SELECT set_config('careflow.tenant_id', $1, true)", tenant_id)
            yield db


class SemanticCache:
    def __init__(
        self,
        pool: asyncpg.Pool,
        threshold: float | None = None,
        *,
        settings: KbSettings | None = None,
        clock: Clock = lambda: None,  # None: the database's now(); tests inject times
    ) -> None:
        self._pool = pool
        self.settings = settings or KbSettings()
        self.threshold = self.settings.cache_threshold if threshold is None else threshold
        self._clock = clock

    async def lookup(self, tenant_id: str, question: str, vector: Sequence[float]) -> CacheHit | None:
        """The nearest live, unexpired entry within the threshold whose decisive terms agree."""
        return await self._nearest(tenant_id, question, vector, include_expired=False)

    async def closest_stale(self, tenant_id: str, question: str, vector: Sequence[float]) -> CacheHit | None:
        """Like `lookup` but expired entries count too (marked stale): the LLM-failure fallback."""
        hit = await self._nearest(tenant_id, question, vector, include_expired=True)
        if hit is None:
            return None
        return CacheHit(**{**hit.__dict__, "stale": True})

    async def _nearest(
        self, tenant_id: str, question: str, vector: Sequence[float], *, include_expired: bool
    ) -> CacheHit | None:
        terms = decisive_terms(question)
        async with tenant_transaction(self._pool, tenant_id) as conn:
            # Iterative scan: the tenant filter must not starve the HNSW candidate list.
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            rows = await conn.fetch(
                """SELECT id, question, answer, document_ids, doc_types, created_at, expires_at,
                          expires_at <= coalesce($4::timestamptz, now()) AS expired,
                          1 - (embedding <=> $2) AS similarity
                     FROM kb_answer_cache
                    WHERE tenant_id = $1 AND invalidated_at IS NULL
                      AND ($5 OR expires_at > coalesce($4::timestamptz, now()))
                    ORDER BY embedding <=> $2
                    LIMIT $3""",
                tenant_id,
                list(vector),
                _CANDIDATES,
                self._clock(),
                include_expired,
            )
            # relaxed_order may return neighbours slightly out of order.
            for row in sorted(rows, key=lambda r: -float(r["similarity"])):
                similarity = float(row["similarity"])
                if similarity < self.threshold:
                    break
                if decisive_terms(row["question"]) != terms:
                    continue
                await conn.execute(
                    """UPDATE kb_answer_cache SET hits = hits + 1,
                              last_hit_at = coalesce($2::timestamptz, now()) WHERE id = $1""",
                    row["id"],
                    self._clock(),
                )
                return CacheHit(
                    entry_id=row["id"],
                    question=row["question"],
                    answer=json.loads(row["answer"]),
                    document_ids=list(row["document_ids"]),
                    doc_types=list(row["doc_types"]),
                    similarity=similarity,
                    created_at=row["created_at"],
                    expires_at=row["expires_at"],
                    stale=bool(row["expired"]),
                )
        return None

    async def store(
        self,
        tenant_id: str,
        question: str,
        vector: Sequence[float],
        answer: Mapping[str, Any],
        document_ids: Sequence[str],
        doc_types: Sequence[str],
    ) -> int:
        """Cache an answer; it expires after the TTL of its shortest-lived cited doc type.  A live
        entry for the same question is replaced."""
        ttl = self.settings.ttl_for(sorted(set(doc_types)))
        async with tenant_transaction(self._pool, tenant_id) as conn:
            entry_id = await conn.fetchval(
                """INSERT INTO kb_answer_cache (tenant_id, question, question_key, decisive_terms, embedding,
                                               answer, document_ids, doc_types, created_at, expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, coalesce($9::timestamptz, now()),
                           coalesce($9::timestamptz, now()) + make_interval(secs => $10))
                   ON CONFLICT (tenant_id, question_key) WHERE invalidated_at IS NULL DO UPDATE
                      SET embedding = EXCLUDED.embedding, answer = EXCLUDED.answer,
                          decisive_terms = EXCLUDED.decisive_terms, document_ids = EXCLUDED.document_ids,
                          doc_types = EXCLUDED.doc_types, created_at = EXCLUDED.created_at,
                          expires_at = EXCLUDED.expires_at, hits = 0, last_hit_at = NULL
                   RETURNING id""",
                tenant_id,
                question,
                question_key(question),
                sorted(decisive_terms(question)),
                list(vector),
                json.dumps(dict(answer)),
                sorted(set(document_ids)),
                sorted(set(doc_types)),
                self._clock(),
                ttl.total_seconds(),
            )
        return int(entry_id)

    async def purge(self, tenant_id: str, older_than_hours: float = 24.0) -> int:
        """Delete entries expired or invalidated more than `older_than_hours` ago."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            status = await conn.execute(
                """DELETE FROM kb_answer_cache
                    WHERE tenant_id = $1
                      AND coalesce(invalidated_at, expires_at)
                          < coalesce($2::timestamptz, now()) - make_interval(secs => $3)""",
                tenant_id,
                self._clock(),
                older_than_hours * 3600,
            )
        return int(status.split()[-1])


async def invalidate_documents(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: str, document_ids: Sequence[str]
) -> int:
    """The `document.updated` event: retire every live entry of the tenant that cites one of the
    documents.  Returns how many entries were invalidated.  On a connection already in a transaction
    (an ingest swapping a document's chunks) it runs in a savepoint, committed with the swap."""
    if not document_ids:
        return 0
    async with tenant_transaction(db, tenant_id) as conn:
        status = await conn.execute(
            """UPDATE kb_answer_cache SET invalidated_at = now()
                WHERE tenant_id = $1 AND invalidated_at IS NULL AND document_ids && $2::text[]""",
            tenant_id,
            list(document_ids),
        )
    return int(status.split()[-1])

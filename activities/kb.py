"""Activities of the knowledge-base refresh: plan, ingest a batch of documents, publish the updates.

Built once per worker process (the embedding model is process-wide).  Each is idempotent: planning
reads; ingesting skips documents whose stored hash matches and swaps the others in one transaction
each; invalidating cache entries twice retires nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from careflow.kb import cache
from careflow.kb import ingest as pipeline
from careflow.kb.embed import Embedder, get_embedder
from careflow.kb.extract import ExtractionError
from careflow.models.kb_refresh import (
    KbBatchInput,
    KbBatchResult,
    KbDocumentOutcome,
    KbPlan,
    KbPlanInput,
    KbPublishInput,
    KbPublishResult,
    KbRejection,
    KbRetireInput,
    KbRetireResult,
)
from careflow.security.logging import get_logger

log = get_logger("careflow.kb")
HEARTBEAT_EVERY_S = 5.0


@contextlib.asynccontextmanager
async def _heartbeating(progress: list[int]) -> AsyncIterator[None]:
    """Heartbeat (documents done so far) while the body runs, also through a long embedding pass."""

    async def beat() -> None:
        while True:
            activity.heartbeat(progress[0])
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class KbActivities:
    def __init__(self, pool: asyncpg.Pool, embedder: Embedder | None = None) -> None:
        self.pool = pool
        self.embedder = embedder or get_embedder()

    def all(self) -> list[Callable[..., Any]]:
        return [self.plan, self.ingest_batch, self.retire_missing, self.publish_updates]

    @activity.defn(name="kb.plan")
    async def plan(self, inp: KbPlanInput) -> KbPlan:
        try:
            plan = await pipeline.plan(self.pool, inp.tenant_id, Path(inp.source))
        except ExtractionError as exc:  # the folder itself is missing: retrying will not help
            raise ApplicationError(str(exc), type="KbSourceError", non_retryable=True) from None
        return KbPlan(
            documents_total=len(plan.sources),
            changed=[s.name for s in plan.changed],
            unchanged=len(plan.unchanged),
            chunks_unchanged=plan.chunks_unchanged,
        )

    @activity.defn(name="kb.ingest_batch")
    async def ingest_batch(self, inp: KbBatchInput) -> KbBatchResult:
        progress = [0]

        def done(_: pipeline.DocumentResult) -> None:
            progress[0] += 1

        async with _heartbeating(progress):
            results = await pipeline.ingest_files(
                self.pool,
                inp.tenant_id,
                Path(inp.source),
                inp.files,
                embedder=self.embedder,
                on_document=done,
            )
        out = KbBatchResult()
        for r in results:
            out.documents.append(
                KbDocumentOutcome(
                    file=r.source_file,
                    document_id=r.document_id,
                    status=r.status,
                    chunks_written=r.chunks_written,
                    chunks_unchanged=r.chunks_unchanged,
                    embeddings_reused=r.embeddings_reused,
                    cache_invalidated=r.cache_invalidated,
                )
            )
            if r.error:
                out.rejected.append(
                    KbRejection(file=r.source_file, document_id=r.document_id, reason=r.error)
                )
            out.rejected += [
                KbRejection(
                    file=r.source_file, document_id=x.document_id, chunk_id=x.chunk_id, reason=x.reason
                )
                for x in r.rejected
            ]
        log.info(
            "kb batch ingested",
            tenant_id=inp.tenant_id,
            documents=len(results),
            chunks_written=sum(r.chunks_written for r in results),
            rejected=len(out.rejected),
        )
        return out

    @activity.defn(name="kb.retire_missing")
    async def retire_missing(self, inp: KbRetireInput) -> KbRetireResult:
        """Documents whose source file left the folder leave the knowledge base and the cache."""
        retired, invalidated = await pipeline.retire_missing(
            self.pool, inp.tenant_id, Path(inp.source), inp.ingested_document_ids
        )
        if retired:
            log.info("kb documents retired", tenant_id=inp.tenant_id, documents=len(retired))
        return KbRetireResult(retired=[r.document_id for r in retired], cache_invalidated=invalidated)

    @activity.defn(name="kb.publish_updates")
    async def publish_updates(self, inp: KbPublishInput) -> KbPublishResult:
        """The `document.updated` event: retire the semantic-cache entries citing these documents."""
        invalidated = await cache.invalidate_documents(self.pool, inp.tenant_id, inp.document_ids)
        return KbPublishResult(invalidated=invalidated)

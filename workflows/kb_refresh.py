"""KnowledgeBaseRefreshWorkflow: ingest one tenant's source folder into the knowledge base.

plan (which sources changed, by hash) -> ingest the changed ones in batches, one activity per batch
-> retire the documents whose source left the folder -> publish `document.updated` for the documents
written (semantic-cache invalidation).  Re-running on
unchanged sources plans nothing to ingest.  Progress is the `progress` query; the CLI's progress bar
polls it.  Started by `careflow kb ingest` (id `kb-refresh-<tenant>-<folder hash>`) and nightly by
the schedule `kb-refresh-<tenant>`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.kb import KbActivities
    from careflow.models.kb_refresh import (
        KbBatchInput,
        KbPlanInput,
        KbProgress,
        KbPublishInput,
        KbRefreshInput,
        KbRetireInput,
    )

RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=5
)


@workflow.defn(name="KnowledgeBaseRefreshWorkflow")
class KnowledgeBaseRefreshWorkflow:
    def __init__(self) -> None:
        self._progress = KbProgress()

    @workflow.run
    async def run(self, inp: KbRefreshInput) -> KbProgress:
        p = self._progress
        plan = await workflow.execute_activity_method(
            KbActivities.plan,
            KbPlanInput(tenant_id=inp.tenant_id, source=inp.source),
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RETRY,
        )
        p.documents_total = plan.documents_total
        p.documents_done = plan.unchanged
        p.chunks_unchanged = plan.chunks_unchanged
        p.stage = "ingesting"
        written: list[str] = []
        seen: list[str] = []  # every document id this run read, written or refused
        for start in range(0, len(plan.changed), inp.batch_size):
            batch = await workflow.execute_activity_method(
                KbActivities.ingest_batch,
                KbBatchInput(
                    tenant_id=inp.tenant_id,
                    source=inp.source,
                    files=plan.changed[start : start + inp.batch_size],
                ),
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(minutes=2),  # the first batch of a worker loads the model
                retry_policy=RETRY,
            )
            for doc in batch.documents:
                p.documents_done += 1
                p.chunks_written += doc.chunks_written
                p.chunks_unchanged += doc.chunks_unchanged
                p.cache_entries_invalidated += doc.cache_invalidated
                if doc.status == "inserted":
                    p.documents_inserted += 1
                elif doc.status == "replaced":
                    p.documents_replaced += 1
                if doc.status in ("inserted", "replaced") and doc.document_id:
                    written.append(doc.document_id)
            p.rejected += batch.rejected
            seen += [d.document_id for d in batch.documents if d.document_id]
        if workflow.patched("kb-retire-missing"):  # runs recorded before it retired nothing
            p.stage = "retiring"
            retired = await workflow.execute_activity_method(
                KbActivities.retire_missing,
                KbRetireInput(tenant_id=inp.tenant_id, source=inp.source, ingested_document_ids=seen),
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RETRY,
            )
            p.documents_retired = retired.retired
            p.cache_entries_invalidated += retired.cache_invalidated
        if written:
            p.stage = "publishing"
            published = await workflow.execute_activity_method(
                KbActivities.publish_updates,
                KbPublishInput(tenant_id=inp.tenant_id, document_ids=written),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RETRY,
            )
            p.cache_entries_invalidated += published.invalidated
        p.stage = "done"
        return p

    @workflow.query
    def progress(self) -> KbProgress:
        return self._progress

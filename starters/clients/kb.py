"""Start the knowledge-base refresh: one run per tenant and folder (`kb-refresh-<tenant>-<folder hash>`),
and the nightly Schedule `kb-refresh-<tenant>` (overlap: skip)."""

from __future__ import annotations

import hashlib

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy

from careflow import task_queues
from careflow.models.kb_refresh import WORKFLOW_ID_PREFIX, KbProgress, KbRefreshInput
from starters.clients.schedules import put_schedule
from workflows.kb_refresh import KnowledgeBaseRefreshWorkflow


def ingest_workflow_id(tenant_id: str, folder: str) -> str:
    """One refresh per tenant and folder at a time: a second `kb ingest` attaches to the running one."""
    return f"{WORKFLOW_ID_PREFIX}{tenant_id}-{hashlib.sha256(folder.encode()).hexdigest()[:12]}"


def schedule_id(tenant_id: str) -> str:
    return f"{WORKFLOW_ID_PREFIX}{tenant_id}"


async def start_ingest(
    client: Client, tenant_id: str, folder: str, batch_size: int = 16, task_queue: str = task_queues.MAIN
) -> WorkflowHandle[KnowledgeBaseRefreshWorkflow, KbProgress]:
    return await client.start_workflow(
        KnowledgeBaseRefreshWorkflow.run,
        KbRefreshInput(tenant_id=tenant_id, source=folder, batch_size=batch_size),
        id=ingest_workflow_id(tenant_id, folder),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def ensure_refresh_schedule(
    client: Client,
    tenant_id: str,
    folder: str,
    cron: str,
    batch_size: int = 16,
    task_queue: str = task_queues.MAIN,
) -> str:
    """Create the nightly schedule `kb-refresh-<tenant>`, or update it in place; returns what it did."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            KnowledgeBaseRefreshWorkflow.run,
            KbRefreshInput(tenant_id=tenant_id, source=folder, batch_size=batch_size),
            id=schedule_id(tenant_id),  # Temporal appends the scheduled time
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),  # a slow night never stacks runs
    )
    return "created" if await put_schedule(client, schedule_id(tenant_id), schedule) else "updated"

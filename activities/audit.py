"""audit.record: workflows record reviewer actions (and rejected update attempts, which Temporal does not
write to history) in the hash-chained trail, exactly once per workflow step."""

from __future__ import annotations

import asyncpg
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from careflow.audit.trail import PostgresAuditTrail
from careflow.idempotency import step_key
from careflow.models.audit import AuditEvent


class RecordAuditInput(BaseModel):
    event: AuditEvent
    # The workflow step this event belongs to (e.g. "review-3-rejected"); with event.workflow_id it
    # forms the idempotency key, so a retried activity appends once.
    step: str


class RecordAuditOutput(BaseModel):
    event_id: int
    inserted: bool


class AuditActivities:
    """Built once per worker process over its injected pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._trail = PostgresAuditTrail(pool)

    @activity.defn(name="audit.record")
    async def record(self, inp: RecordAuditInput) -> RecordAuditOutput:
        if not inp.event.workflow_id:
            raise ApplicationError(
                "audit.record needs event.workflow_id (it keys the event with the step)", non_retryable=True
            )
        key = step_key(inp.event.workflow_id, inp.step)
        result = await self._trail.append(inp.event, event_key=key)
        return RecordAuditOutput(event_id=result.event_id, inserted=result.inserted)

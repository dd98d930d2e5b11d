"""Submit a staff review of a prior-authorization draft through the workflow's `review` update.

An update the workflow's validator rejects never reaches its history, so the attempt is recorded here,
in the audit trail (a reviewer action with outcome `rejected`), before the caller hears why.  The CLI
and the API both go through `submit_review`.
"""

from __future__ import annotations

import asyncpg
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from careflow.audit.trail import PostgresAuditTrail
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType, AuditOutcome
from careflow.models.prior_auth import ReviewOutcome, ReviewRequest, reviewer_ref
from workflows.prior_auth import PriorAuthWorkflow


class ReviewRefused(Exception):
    """The workflow refused the review action; `reason` is PHI-free and safe to show the reviewer."""

    def __init__(self, workflow_id: str, reason: str) -> None:
        self.workflow_id = workflow_id
        self.reason = reason
        super().__init__(f"review of {workflow_id} refused: {reason}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.message:
            return cause.message
        return str(cause) if cause else "update failed"
    if isinstance(exc, RPCError):
        if exc.status == RPCStatusCode.NOT_FOUND:
            return "no running prior-authorization workflow with this id"
        return f"Temporal refused the update ({exc.status.name if exc.status else 'unknown'})"
    return type(exc).__name__


async def submit_review(
    client: Client, workflow_id: str, request: ReviewRequest, audit_pool: asyncpg.Pool
) -> ReviewOutcome:
    """Run the `review` update; on refusal audit the attempt and raise ReviewRefused."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.execute_update(PriorAuthWorkflow.review, request)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        reason = _reason(exc)
        await PostgresAuditTrail(audit_pool).record(
            AuditEvent(
                event_type=AuditEventType.REVIEWER_ACTION,
                actor=reviewer_ref(request.reviewer_id),
                actor_type="user",
                action=AuditAction.EXECUTE,
                outcome=AuditOutcome.REJECTED,
                resource_type="Task",
                workflow_id=workflow_id,
                detail={"action": request.action, "via": "update", "reason": reason[:200]},
            )
        )
        raise ReviewRefused(workflow_id, reason) from None

"""One way to send a person's decision to a workflow as a validated update (a reviewer's approval, a
physician's signature, a coder's codes).  An update the validator refuses never reaches the workflow's
history, so `execute_audited` records the refused attempt in the audit trail before the caller hears why
(`ReviewRefused`, whose reason is PHI-free and safe to show)."""

from __future__ import annotations

from typing import Any, TypeVar

import asyncpg
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from careflow.audit.trail import PostgresAuditTrail
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType, AuditOutcome

R = TypeVar("R")


class ReviewRefused(Exception):
    """The workflow refused the action; `reason` is PHI-free and safe to show the person."""

    def __init__(self, workflow_id: str, reason: str) -> None:
        self.workflow_id = workflow_id
        self.reason = reason
        super().__init__(f"{workflow_id} refused the action: {reason}")


def refusal_reason(exc: BaseException, what: str) -> str:
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.message:
            return cause.message
        return str(cause) if cause else "update failed"
    if isinstance(exc, RPCError):
        if exc.status == RPCStatusCode.NOT_FOUND:
            return f"no running {what} workflow with this id"
        return f"Temporal refused the update ({exc.status.name if exc.status else 'unknown'})"
    return type(exc).__name__


async def execute_audited(
    client: Client,
    workflow_id: str,
    update: Any,
    arg: Any,
    *,
    audit_pool: asyncpg.Pool,
    actor: str,
    action: str,
    resource_type: str,
    what: str,
) -> Any:
    """Run the update; on refusal audit the attempt (actor, action, reason) and raise ReviewRefused."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.execute_update(update, arg)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        reason = refusal_reason(exc, what)
        await PostgresAuditTrail(audit_pool).record(
            AuditEvent(
                event_type=AuditEventType.REVIEWER_ACTION,
                actor=actor,
                actor_type="user",
                action=AuditAction.EXECUTE,
                outcome=AuditOutcome.REJECTED,
                resource_type=resource_type,
                workflow_id=workflow_id,
                detail={"action": action, "via": "update", "reason": reason[:200]},
            )
        )
        raise ReviewRefused(workflow_id, reason) from None

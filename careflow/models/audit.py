"""The audit event every PHI access, PHI write, AI inference with PHI and reviewer action produces.

Fields are ids and enums only: an audit row names *which* patient and resource, never their content.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class AuditEventType(StrEnum):
    PHI_ACCESS = "phi-access"
    PHI_WRITE = "phi-write"
    AI_INFERENCE = "ai-inference"
    REVIEWER_ACTION = "reviewer-action"
    SYSTEM_OPERATION = "system-operation"  # the platform acting on itself: a DR failover's steps


class AuditAction(StrEnum):
    # FHIR AuditEvent.action codes
    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    REJECTED = "rejected"  # e.g. an update-validator rejection of a reviewer action


class AuditEvent(BaseModel):
    event_type: AuditEventType
    actor: str  # user id or service account (e.g. the worker identity)
    actor_type: str = "service"  # "user" | "service"
    action: AuditAction
    outcome: AuditOutcome = AuditOutcome.SUCCESS
    patient_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    request_id: str | None = None  # correlates FHIR reads with the AI inference that used them
    workflow_id: str | None = None
    # Short non-PHI facts (query parameter names, model, reason code); never resource content.
    detail: dict[str, str] = Field(default_factory=dict)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

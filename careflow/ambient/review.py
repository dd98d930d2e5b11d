"""The review of an ambient note, without Temporal: the clocks (consent, SLA, reminders, coding), what
each person's update may do at a given stage (the workflow's validators ask here), and the audit event
of a decision."""

from __future__ import annotations

from datetime import datetime, timedelta

from careflow.models.ambient import AmbientStage, AmbientStatus, CodesReview
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType

CONSENT_WAIT = timedelta(hours=1)  # then no-consent, and the recording is deleted
SLA_ESCALATION = timedelta(minutes=45)  # after the encounter's end, if the note is not in the EHR
# While unsigned: reminders to the physician, then operations (the medical director's queue).
REVIEW_NOTICES = (
    (timedelta(hours=4), "review-reminder"),
    (timedelta(hours=24), "review-reminder"),
    (timedelta(hours=48), "review-escalation"),
)
REVIEW_WINDOW = timedelta(days=7)  # then unsigned: the draft stays preliminary in the EHR
CODING_REMINDER = timedelta(days=3)
CODING_WINDOW = timedelta(days=30)  # then the note completes with its codes still candidates
OPERATIONS = "operations"


def consent_problem(s: AmbientStatus) -> str | None:
    if s.consent is not None:
        return "consent was already recorded for this encounter"
    if s.stage.settled:
        return f"the note workflow has ended ({s.stage})"
    return None


def reviewer_problem(s: AmbientStatus, decided: bool, practitioner_id: str, verb: str) -> str | None:
    """Why `practitioner_id` may not sign (or discard) now; None if they may."""
    if s.stage is not AmbientStage.AWAITING_SIGNATURE or decided:
        return f"nothing awaits a signature: the note is {s.stage}"
    if practitioner_id != s.physician_id:
        return f"only the encounter's physician (Practitioner/{s.physician_id}) may {verb} this note"
    return None


def _bare(code: str) -> str:
    return code.strip().upper().replace(".", "")


def codes_problem(s: AmbientStatus, busy: bool, review: CodesReview) -> str | None:
    """Why a coder's decision cannot be taken now; None if it can (added codes are checked after)."""
    if not s.document_id or s.stage.settled:
        return f"no candidate codes await review: the note is {s.stage}"
    if s.codes_final or busy:
        return "the codes are final already"
    candidates = {_bare(x.code) for x in s.codes}
    unknown = [c for c in review.remove if _bare(c) not in candidates]
    return f"not among the candidates: {', '.join(unknown)}" if unknown else None


def decision_event(
    action: str, actor: str, resource_type: str, resource_id: str, workflow_id: str, at: datetime
) -> AuditEvent:
    """A person's decision (consent, sign, discard, codes) for the audit trail: ids only."""
    return AuditEvent(
        event_type=AuditEventType.REVIEWER_ACTION,
        actor=actor,
        actor_type="user",
        action=AuditAction.UPDATE if resource_id else AuditAction.CREATE,
        resource_type=resource_type,
        resource_id=resource_id or None,
        workflow_id=workflow_id,
        detail={"action": action},
        occurred_at=at,
    )

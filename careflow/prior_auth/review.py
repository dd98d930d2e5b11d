"""Staff review of a draft: whether a review action can be accepted now, the decision it becomes,
the run's review desk (the accepted action waiting to be acted on, the ignored signals waiting to be
audited), whom a review is assigned to, and the AuditEvents of reviewer actions.

Pure: the caller passes the clock and the workflow id (a workflow passes `workflow.now()`; the
AuditEvent model's own default clock must not run in workflow code).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from careflow.models.audit import AuditAction, AuditEvent, AuditEventType, AuditOutcome
from careflow.models.prior_auth import (
    CloseReviewRequest,
    Draft,
    OrderInfo,
    PayerSubmission,
    PriorAuthStatus,
    Priority,
    ReviewActionName,
    ReviewDecision,
    ReviewOutcome,
    ReviewRecords,
    ReviewRequest,
    ReviewRoster,
    RosterMember,
    Stage,
    reviewer_ref,
)

# The stage an accepted action moves the run to.
NEXT_STAGE: dict[ReviewActionName, Stage] = {
    "approve": Stage.SUBMITTING,
    "reject": Stage.REJECTED,
    "request_changes": Stage.REGENERATING,
}


def problem(req: ReviewRequest, stage: Stage, pending: bool, roster: ReviewRoster) -> str | None:
    """Why a review action cannot be accepted now (PHI-free: it reaches the caller and the audit);
    `pending`: an accepted action has not been acted on yet."""
    if stage != Stage.AWAITING_REVIEW or pending:
        return f"the workflow is not awaiting review (stage {stage.value})"
    if not roster.holds_review_role(req.reviewer_id):
        return "the reviewer does not hold a prior-authorization review role"
    if req.action == "request_changes" and not req.comments.strip():
        return "request_changes needs comments"
    return None


def decision(req: ReviewRequest, at: datetime, revision: int, via: str) -> ReviewDecision:
    """The accepted action on draft `revision`, by the reviewer's Practitioner reference."""
    return ReviewDecision(
        action=req.action,
        reviewer_ref=reviewer_ref(req.reviewer_id),
        comments=req.comments,
        edited_letter=req.edited_letter,
        at=at,
        revision=revision,
        via="update" if via == "update" else "signal",
    )


@dataclass
class ReviewDesk:
    """The review actions a run receives (signals or the validated `review` update).

    At most one accepted action waits for the run loop (`take`); a signalled action that cannot be
    accepted is ignored, since a signal cannot be refused, and waits to be audited (`unaudited`).
    Accepting moves the run's status on at once, so a second action finds it no longer in review."""

    roster: ReviewRoster = field(default_factory=ReviewRoster)
    pending: ReviewDecision | None = None
    ignored: list[tuple[ReviewRequest, str]] = field(default_factory=list)  # (action, why)
    audited: int = 0  # ignored actions audited so far
    decisions: int = 0  # actions accepted so far

    def problem(self, req: ReviewRequest, status: PriorAuthStatus) -> str | None:
        return problem(req, status.stage, self.pending is not None, self.roster)

    def accept(self, req: ReviewRequest, via: str, at: datetime, status: PriorAuthStatus) -> ReviewOutcome:
        self.pending = decision(req, at, status.revision, via)
        self.decisions += 1
        if req.action != "request_changes":
            status.decision = self.pending
        status.stage = NEXT_STAGE[req.action]
        return ReviewOutcome(accepted=True, action=req.action, stage=status.stage.value)

    def signal(self, req: ReviewRequest, at: datetime, status: PriorAuthStatus) -> None:
        """A signalled action: accepted when it can be, else ignored (and audited by the run loop)."""
        reason = self.problem(req, status)
        if reason is None:
            self.accept(req, "signal", at, status)
        else:
            self.ignored.append((req, reason))
            status.ignored_actions = len(self.ignored)

    @property
    def waiting(self) -> bool:
        """An accepted action or an ignored one waits for the run loop."""
        return self.pending is not None or len(self.ignored) > self.audited

    def take(self) -> ReviewDecision | None:
        """The accepted action, handed to the run loop once."""
        taken, self.pending = self.pending, None
        return taken

    def unaudited(self) -> Iterator[tuple[int, ReviewRequest, str]]:
        """Ignored actions not audited yet, numbered from 1 in arrival order (including any that
        arrive while the caller audits)."""
        while self.audited < len(self.ignored):
            req, reason = self.ignored[self.audited]
            self.audited += 1
            yield self.audited, req, reason


def supervisor(roster: ReviewRoster) -> RosterMember | None:
    """Who an overdue review escalates to: the first PA supervisor on the roster."""
    supervisors = roster.of_role("pa-supervisor")
    return supervisors[0] if supervisors else None


def assignee(staff: Sequence[RosterMember], order_id: str) -> RosterMember | None:
    """Reviews spread over the PA staff deterministically: the same order, the same assignee."""
    return staff[sum(map(ord, order_id)) % len(staff)] if staff else None


def review_event(
    order: OrderInfo,
    actor: str,
    outcome: AuditOutcome,
    detail: dict[str, str],
    at: datetime,
    task_id: str | None,
    workflow_id: str,
) -> AuditEvent:
    """A reviewer action on the review Task, as an audit event (ids and enums only)."""
    return AuditEvent(
        event_type=AuditEventType.REVIEWER_ACTION,
        actor=actor,
        actor_type="user",
        action=AuditAction.EXECUTE,
        outcome=outcome,
        patient_id=order.patient_ref.removeprefix("Patient/"),
        resource_type="Task",
        resource_id=task_id,
        workflow_id=workflow_id,
        detail=detail,
        occurred_at=at,  # explicit: the model's default clock is not allowed in workflow code
    )


def decision_event(order: OrderInfo, d: ReviewDecision, task_id: str | None, workflow_id: str) -> AuditEvent:
    detail = {
        "action": d.action,
        "via": d.via,
        "revision": str(d.revision),
        "edited": str(bool(d.edited_letter)),
    }
    return review_event(order, d.reviewer_ref, AuditOutcome.SUCCESS, detail, d.at, task_id, workflow_id)


def ignored_event(
    order: OrderInfo, req: ReviewRequest, reason: str, at: datetime, task_id: str | None, workflow_id: str
) -> AuditEvent:
    """A signalled action that could not be accepted (a signal cannot be refused, only ignored)."""
    detail = {"action": req.action, "via": "signal", "reason": reason}
    actor = reviewer_ref(req.reviewer_id)
    return review_event(order, actor, AuditOutcome.REJECTED, detail, at, task_id, workflow_id)


def close_request(
    outcome: Literal["approved", "rejected", "expired"],
    status: PriorAuthStatus,
    records: ReviewRecords,
    decision: ReviewDecision | None,
    final_letter: str | None = None,
) -> CloseReviewRequest:
    """How the review ends in the EHR: the document and every Task the run made (review, escalation)."""
    return CloseReviewRequest(
        outcome=outcome,
        document_reference_id=records.document_reference_id,
        task_ids=[t for t in (status.task_id, status.escalation_task_id) if t],
        final_letter=final_letter,
        reviewer_ref=decision.reviewer_ref if decision else None,
    )


def submission(
    approval: ReviewDecision,
    order: OrderInfo,
    priority: Priority,
    payer_ref: str | None,
    status: PriorAuthStatus,
    records: ReviewRecords,
    letter: str,
    draft: Draft,
) -> PayerSubmission:
    """The approved request for the payer: the approval travels with it (checked again on submission)."""
    return PayerSubmission(
        approval=approval,
        order=order,
        priority=priority,
        payer_ref=payer_ref,
        payer_name=status.payer,
        document_reference_id=records.document_reference_id,
        letter=letter,
        criteria=draft.criteria,
    )

"""PriorAuthWorkflow on the time-skipping server: approve, reject, request_changes then approve, the 4 h
reminder, the 8 h escalation, deadline expiry, FHIR failure (partial context), LLM failure (template),
and review actions that must be refused.  The activities here stand in for FHIR, the knowledge base,
the gateway and the payer so the workflow's logic and timing are tested alone; the real activities
run in tests/prior_auth/test_prior_auth_dev.py.

`CAREFLOW_RECORD_HISTORIES=1` re-records tests/histories/PriorAuthWorkflow-<path>.json from these runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.audit import RecordAuditInput, RecordAuditOutput
from activities.llm import DraftInput, DraftOutput
from activities.prior_auth import PriorAuthActivities
from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.fhir import codes
from careflow.fhir.client import FhirClient
from careflow.llm.providers.offline import draft as offline_draft
from careflow.llm.types import Tier
from careflow.models.audit import AuditOutcome
from careflow.models.prior_auth import (
    ClinicalEvidence,
    CloseReviewRequest,
    Code,
    ContextEntry,
    ContextPart,
    ContextRequest,
    EscalationRequest,
    EvidenceRequest,
    MetricsRecord,
    NotifyRequest,
    OrderInfo,
    PayerInquiry,
    PayerOutcome,
    PayerSubmission,
    PriorAuthInput,
    Priority,
    PublishDraftRequest,
    ReviewAction,
    ReviewDecision,
    ReviewRecords,
    ReviewRequest,
    ReviewRoster,
    RosterMember,
    workflow_id,
)
from careflow.notify.notifier import Notifier
from starters.clients.history import export_history
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.prior_auth import PriorAuthWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
STAFF = "Practitioner/pa-staff-1"
SUPERVISOR = "Practitioner/pa-supervisor-1"
CRITERIA = [
    "Criterion 1: Diagnosis of type 2 diabetes mellitus (E11).",
    "Criterion 2: Prior treatment with metformin.",
]

calls: list[tuple[str, str, Any]] = []  # (workflow id, activity, request)
attempts: dict[tuple[str, str], int] = {}
# Dependency outages: a workflow whose id holds the tag finds the activity's system down until then
# (server time, which the time-skipping server moves on).
outages: dict[str, tuple[str, datetime]] = {}


def _record(name: str, req: Any) -> str:
    info = activity.info()
    wid = info.workflow_id or ""
    calls.append((wid, name, req))
    key = (wid, name if not isinstance(req, ContextRequest) else f"{name}:{req.resource_type}")
    attempts[key] = attempts.get(key, 0) + 1
    for tag, (down, until) in outages.items():
        if tag in wid and down == name and info.current_attempt_scheduled_time < until:
            raise ApplicationError("connection refused", type="FhirUnavailable")
    return wid


def made(handle: WorkflowHandle, name: str) -> list[Any]:
    return [req for wid, n, req in calls if wid == handle.id and n == name]


@activity.defn(name="pa.find_order")
async def find_order(order_id: str) -> OrderInfo:
    _record("pa.find_order", order_id)
    return OrderInfo(
        order_id=order_id,
        reference="MedicationRequest/mr-1",
        patient_ref="Patient/p-1",
        item=Code(system=codes.RXNORM, code="1991302", display="semaglutide"),
        diagnoses=[Code(system=codes.ICD10CM, code="E11.9", display="Type 2 diabetes mellitus")],
        requester_ref="Practitioner/pcp-1",
        coverage_ref="Coverage/cov-1",
    )


@activity.defn(name="pa.read_context")
async def read_context(req: ContextRequest) -> ContextPart:
    wid = _record("pa.read_context", req)
    if "fhir-down" in wid and req.resource_type == "Procedure":
        raise ApplicationError("FHIR server unavailable (503)", type="FhirUnavailable")
    entries = {
        "Condition": [ContextEntry(reference="Condition/c-1", summary="Condition: Type 2 diabetes (E11.9).")],
        "MedicationRequest": [
            ContextEntry(reference="MedicationRequest/m-1", summary="MedicationRequest: metformin, active.")
        ],
    }.get(req.resource_type, [])
    part = ContextPart(resource_type=req.resource_type, entries=entries)
    if req.resource_type == "Coverage":
        part.payer_ref, part.payer_name = "Organization/payer-1", "Aetna"
    return part


@activity.defn(name="pa.retrieve_evidence")
async def retrieve_evidence(req: EvidenceRequest) -> ClinicalEvidence:
    _record("pa.retrieve_evidence", req)
    return ClinicalEvidence(criteria=CRITERIA, policy_document="aetna-glp1@v1")


@activity.defn(name="llm.draft")
async def llm_draft(inp: DraftInput) -> DraftOutput:
    wid = _record("llm.draft", inp)
    if "llm-down" in wid:
        raise ApplicationError("providers unavailable", type="ProvidersUnavailable")
    out = offline_draft(inp.task, inp.task_input, inp.evidence)
    return DraftOutput(
        task=inp.task,
        output=out.model_dump(mode="json"),
        request_id=inp.request_id,
        provider="offline",
        model="offline-pa",
        requested_tier=inp.tier,
        tier=inp.tier,
    )


@activity.defn(name="pa.review_roster")
async def review_roster() -> ReviewRoster:
    _record("pa.review_roster", None)
    return ReviewRoster(
        members=[
            RosterMember(practitioner_ref=STAFF, role_ref="PractitionerRole/r-staff-1", role="pa-staff"),
            RosterMember(
                practitioner_ref=SUPERVISOR, role_ref="PractitionerRole/r-sup-1", role="pa-supervisor"
            ),
        ]
    )


@activity.defn(name="pa.publish_draft")
async def publish_draft(req: PublishDraftRequest) -> ReviewRecords:
    _record("pa.publish_draft", req)
    return ReviewRecords(document_reference_id="doc-1", task_id="task-1")


@activity.defn(name="pa.escalate")
async def escalate(req: EscalationRequest) -> str:
    _record("pa.escalate", req)
    return "task-escalated"


@activity.defn(name="pa.notify")
async def notify(req: NotifyRequest) -> bool:
    _record("pa.notify", req)
    return True


@activity.defn(name="pa.close_review")
async def close_review(req: CloseReviewRequest) -> None:
    _record("pa.close_review", req)


@activity.defn(name="pa.submit_to_payer")
async def submit_to_payer(req: PayerSubmission) -> PayerOutcome:
    wid = _record("pa.submit_to_payer", req)
    assert req.approval.action == "approve"
    if "payer-refuses" in wid:
        raise ApplicationError(
            "payer $submit answered 400: invalid", type="PayerRejected", non_retryable=True
        )
    return PayerOutcome(outcome="pended" if "pended" in wid else "approved", claim_response_id="cr-1")


@activity.defn(name="pa.inquire_payer")
async def inquire_payer(req: PayerInquiry) -> PayerOutcome:
    wid = _record("pa.inquire_payer", req)
    decided = attempts[(wid, "pa.inquire_payer")] >= 2
    return PayerOutcome(outcome="approved" if decided else "pended", claim_response_id=req.claim_response_id)


@activity.defn(name="pa.record_metrics")
async def record_metrics(m: MetricsRecord) -> None:
    _record("pa.record_metrics", m)


@activity.defn(name="audit.record")
async def record_audit(inp: RecordAuditInput) -> RecordAuditOutput:
    _record("audit.record", inp)
    return RecordAuditOutput(event_id=len(calls), inserted=True)


ACTIVITIES: list[Callable[..., Any]] = [
    find_order, read_context, retrieve_evidence, llm_draft, review_roster, publish_draft, escalate, notify,
    close_review, submit_to_payer, inquire_payer, record_metrics, record_audit,
]  # fmt: skip


@pytest.fixture
async def env(time_skipping: WorkflowEnvironment, task_queue: str) -> AsyncIterator[WorkflowEnvironment]:
    async with Worker(
        time_skipping.client,
        task_queue=task_queue,
        workflows=[PriorAuthWorkflow],
        activities=ACTIVITIES,
        workflow_runner=sandbox_runner(),
    ):
        yield time_skipping


async def start(
    env: WorkflowEnvironment, task_queue: str, tag: str = "", priority: Priority = Priority.STANDARD
) -> WorkflowHandle:
    order_id = f"ord-test-{tag}-{uuid.uuid4().hex[:8]}"
    return await env.client.start_workflow(
        PriorAuthWorkflow.run,
        PriorAuthInput(order_id=order_id, priority=priority, search_attributes=False),
        id=workflow_id(order_id),
        task_queue=task_queue,
    )


async def awaiting_review(handle: WorkflowHandle) -> None:
    async def ready() -> bool:
        return (await handle.query(PriorAuthWorkflow.status)).stage == "awaiting_review"

    await wait_until(ready, what="the draft to await review")


async def record_history(env: WorkflowEnvironment, handle: WorkflowHandle, path: str) -> None:
    if os.environ.get("CAREFLOW_RECORD_HISTORIES") != "1":
        return
    written = await export_history(env.client, handle.id, HISTORIES)
    written.replace(HISTORIES / f"PriorAuthWorkflow-{path}.json")


def audits(handle: WorkflowHandle) -> list[RecordAuditInput]:
    return made(handle, "audit.record")


async def test_approve_with_edits_finalises_and_submits(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue)
    await awaiting_review(handle)
    assert made(handle, "pa.submit_to_payer") == []  # nothing reaches the payer before approval
    outcome = await handle.execute_update(
        PriorAuthWorkflow.review,
        ReviewRequest(action="approve", reviewer_id=STAFF, edited_letter="Approved letter, edited."),
    )
    assert outcome.accepted and outcome.stage == "submitting"
    out = await handle.result()
    assert out.status.stage == "approved"
    assert out.status.payer == "Aetna" and out.status.payer_outcome is not None
    [close] = made(handle, "pa.close_review")
    assert close.outcome == "approved" and close.final_letter == "Approved letter, edited."
    assert close.task_ids == ["task-1"] and close.reviewer_ref == STAFF
    [submission] = made(handle, "pa.submit_to_payer")
    assert submission.approval.action == "approve" and submission.letter == "Approved letter, edited."
    [review] = audits(handle)
    assert review.step == "review-1-approve" and review.event.actor == STAFF
    assert review.event.outcome == AuditOutcome.SUCCESS and review.event.detail["via"] == "update"
    final = made(handle, "pa.record_metrics")[-1]
    assert final.outcome == "approved" and final.final_letter == "Approved letter, edited."
    assert final.draft_letter is not None and final.draft_letter != final.final_letter
    # the Frontier draft went through the gateway with a step-derived request id
    [draft] = made(handle, "llm.draft")
    assert draft.tier == Tier.FRONTIER and draft.request_id == f"{handle.id}/draft"
    assert draft.task_input["criteria"] == CRITERIA
    await record_history(env, handle, "approved")


async def test_reject_cancels_and_submits_nothing(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue)
    await awaiting_review(handle)
    await handle.signal(PriorAuthWorkflow.reject, ReviewAction(reviewer_id=STAFF, comments="not indicated"))
    out = await handle.result()
    assert out.status.stage == "rejected" and out.status.decision is not None
    [close] = made(handle, "pa.close_review")
    assert close.outcome == "rejected" and close.final_letter is None
    assert made(handle, "pa.submit_to_payer") == []
    assert [a.step for a in audits(handle)] == ["review-1-reject"]
    await record_history(env, handle, "rejected")


async def test_request_changes_regenerates_then_approve(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue)
    await awaiting_review(handle)
    outcome = await handle.execute_update(
        PriorAuthWorkflow.review,
        ReviewRequest(action="request_changes", reviewer_id=STAFF, comments="Cite the HbA1c trend."),
    )
    assert outcome.stage == "regenerating"
    await wait_until(lambda: len(made(handle, "pa.publish_draft")) == 2, what="the second revision")
    await awaiting_review(handle)
    await handle.signal(PriorAuthWorkflow.approve, ReviewAction(reviewer_id=STAFF))
    out = await handle.result()
    assert out.status.stage == "approved" and out.status.revision == 1
    first, second = made(handle, "llm.draft")
    assert first.task_input["reviewer_comments"] == ""
    assert second.task_input["reviewer_comments"] == "Cite the HbA1c trend."
    assert second.request_id == f"{handle.id}/draft-r1"
    publish_1, publish_2 = made(handle, "pa.publish_draft")
    assert publish_1.document_reference_id is None and publish_2.document_reference_id == "doc-1"
    assert "Cite the HbA1c trend." in publish_2.draft.letter  # the offline drafter addresses the comments
    [submission] = made(handle, "pa.submit_to_payer")
    assert submission.letter == publish_2.draft.letter
    assert [a.step for a in audits(handle)] == ["review-1-request_changes", "review-2-approve"]
    assert [n.step for n in made(handle, "pa.notify")] == ["notify-review", "notify-review-r1"]
    await record_history(env, handle, "changes-then-approved")


async def test_reminder_at_4_hours(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue)
    await awaiting_review(handle)
    await env.sleep(timedelta(hours=3))
    assert [n.kind for n in made(handle, "pa.notify")] == ["pa-review"]
    await env.sleep(timedelta(hours=2))
    reminders = [n for n in made(handle, "pa.notify") if n.kind == "pa-reminder"]
    assert [(n.step, n.recipient_ref) for n in reminders] == [("reminder", STAFF)]
    status = await handle.query(PriorAuthWorkflow.status)
    assert status.reminded and not status.escalated and status.stage == "awaiting_review"
    await handle.signal(PriorAuthWorkflow.approve, ReviewAction(reviewer_id=STAFF))
    assert (await handle.result()).status.stage == "approved"
    assert made(handle, "pa.escalate") == []
    await record_history(env, handle, "reminded")


async def test_escalation_at_8_hours_keeps_waiting(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue)
    await awaiting_review(handle)
    await env.sleep(timedelta(hours=9))
    [esc] = made(handle, "pa.escalate")
    assert esc.review_task_id == "task-1" and esc.supervisor is not None
    assert esc.supervisor.practitioner_ref == SUPERVISOR
    escalation = [n for n in made(handle, "pa.notify") if n.kind == "pa-escalation"]
    assert [(n.recipient_ref, n.task_id) for n in escalation] == [(SUPERVISOR, "task-escalated")]
    status = await handle.query(PriorAuthWorkflow.status)
    assert status.stage == "awaiting_review" and status.escalation_task_id == "task-escalated"
    # the supervisor holds a review role too
    await handle.execute_update(
        PriorAuthWorkflow.review, ReviewRequest(action="approve", reviewer_id=SUPERVISOR)
    )
    out = await handle.result()
    assert out.status.stage == "approved"
    [close] = made(handle, "pa.close_review")
    assert close.task_ids == ["task-1", "task-escalated"]
    await record_history(env, handle, "escalated")


@pytest.mark.parametrize(
    ("priority", "deadline"), [("standard", timedelta(days=7)), ("expedited", timedelta(hours=72))]
)
async def test_deadline_expiry_cancels_the_task(
    env: WorkflowEnvironment, task_queue: str, priority: str, deadline: timedelta
) -> None:
    handle = await start(env, task_queue, priority=Priority(priority))
    out = await handle.result()  # nobody reviews: the server skips to the deadline
    s = out.status
    assert s.stage == "expired" and s.decision is None
    assert s.received_at is not None and s.decided_at is not None
    assert timedelta(0) <= (s.decided_at - s.received_at) - deadline < timedelta(seconds=1)
    [close] = made(handle, "pa.close_review")
    assert close.outcome == "expired" and close.final_letter is None
    assert close.task_ids == ["task-1", "task-escalated"]  # escalated on the way, both closed
    assert made(handle, "pa.submit_to_payer") == []
    assert made(handle, "pa.record_metrics")[-1].outcome == "expired"
    if priority == "standard":
        await record_history(env, handle, "expired")


async def test_fhir_failure_continues_with_partial_context(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue, tag="fhir-down")
    await env.sleep(timedelta(minutes=31))  # the read's 30-minute budget (workflows/retry_rules.py)
    await awaiting_review(handle)
    status = await handle.query(PriorAuthWorkflow.status)
    assert status.partial_context and status.missing_resource_types == ["Procedure"]
    assert any("Procedure" in m for m in status.missing_information)
    assert attempts[(handle.id, "pa.read_context:Procedure")] > 10  # retried all along the budget
    assert attempts[(handle.id, "pa.read_context:Condition")] == 1
    [draft] = made(handle, "llm.draft")
    assert {e.id for e in draft.evidence} >= {"Condition/c-1", "MedicationRequest/m-1"}
    [published] = made(handle, "pa.publish_draft")
    assert any("Procedure" in m for m in published.draft.missing_information)  # the reviewer is told
    await handle.signal(PriorAuthWorkflow.approve, ReviewAction(reviewer_id=STAFF))
    assert (await handle.result()).status.stage == "approved"
    await record_history(env, handle, "partial-context")


async def test_llm_failure_routes_a_template(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue, tag="llm-down")
    await awaiting_review(handle)
    assert attempts[(handle.id, "llm.draft")] == 2
    [published] = made(handle, "pa.publish_draft")
    draft = published.draft
    assert draft.template and draft.model == "template"
    assert "TEMPLATE" in draft.letter and "Condition/c-1" in draft.letter
    assert [c.status for c in draft.criteria] == ["unknown", "unknown"]
    assert [c.criterion for c in draft.criteria] == CRITERIA
    status = await handle.query(PriorAuthWorkflow.status)
    assert status.template
    await handle.signal(PriorAuthWorkflow.reject, ReviewAction(reviewer_id=STAFF))
    assert (await handle.result()).status.stage == "rejected"
    await record_history(env, handle, "template")


async def test_pended_payer_answer_is_followed_up(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue, tag="pended")
    await awaiting_review(handle)
    await handle.signal(PriorAuthWorkflow.approve, ReviewAction(reviewer_id=STAFF))
    out = await handle.result()
    assert out.status.stage == "approved"
    assert len(made(handle, "pa.inquire_payer")) == 2
    await record_history(env, handle, "pended-then-approved")


async def test_refused_review_actions(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue)
    await awaiting_review(handle)
    for req in (
        ReviewRequest(action="approve", reviewer_id="Practitioner/intruder"),
        ReviewRequest(action="request_changes", reviewer_id=STAFF, comments="  "),
    ):
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update(PriorAuthWorkflow.review, req)
        assert isinstance(info.value.cause, ApplicationError)
    # a signal cannot be refused: it is ignored, and audited as rejected
    await handle.signal(PriorAuthWorkflow.approve, ReviewAction(reviewer_id="Practitioner/intruder"))
    await wait_until(lambda: audits(handle), what="the ignored signal's audit")
    [ignored] = audits(handle)
    assert ignored.event.outcome == AuditOutcome.REJECTED and ignored.event.actor == "Practitioner/intruder"
    assert ignored.event.detail["via"] == "signal"
    status = await handle.query(PriorAuthWorkflow.status)
    assert status.stage == "awaiting_review" and status.ignored_actions == 1
    await handle.signal(PriorAuthWorkflow.reject, ReviewAction(reviewer_id=STAFF))
    assert (await handle.result()).status.stage == "rejected"
    # once decided, a late update is refused: the workflow is not awaiting review
    assert made(handle, "pa.submit_to_payer") == []


async def test_payer_refusal_is_reported_not_retried_forever(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, tag="payer-refuses")
    await awaiting_review(handle)
    await handle.signal(PriorAuthWorkflow.approve, ReviewAction(reviewer_id=STAFF))
    out = await handle.result()
    assert out.status.stage == "submission_failed" and out.status.payer_outcome is None
    assert any("PayerRejected" in m for m in out.status.missing_information)
    assert len(made(handle, "pa.submit_to_payer")) == 1
    assert made(handle, "pa.record_metrics")[-1].outcome == "submission_failed"


async def test_the_payer_activity_refuses_anything_but_an_approval() -> None:
    """The invariant is checked where the submission happens, whatever the caller."""
    unused_pool: Any = None  # the check comes before any I/O
    async with FhirClient(
        "http://127.0.0.1:9/fhir", audit=PostgresAuditTrail(unused_pool), actor="t"
    ) as fhir:
        acts = PriorAuthActivities(
            fhir, unused_pool, Notifier(unused_pool, None), Settings(payer_base_url="http://127.0.0.1:9")
        )
        order = await ActivityEnvironment().run(find_order, "ord-x")
        for action in ("reject", "request_changes"):
            decision = ReviewDecision(
                action=action, reviewer_ref=STAFF, at=datetime.now(UTC), revision=0, via="update"
            )
            submission = PayerSubmission(
                approval=decision, order=order, priority=Priority.STANDARD, payer_ref="Organization/p",
                payer_name="Aetna", document_reference_id="doc-1", letter="x", criteria=[],
            )  # fmt: skip
            with pytest.raises(ApplicationError) as refused:
                await ActivityEnvironment().run(acts.submit_to_payer, submission)
            assert refused.value.type == "NotApproved" and refused.value.non_retryable


OUTAGE_STEPS = ["pa.find_order", "pa.read_context", "pa.retrieve_evidence", "pa.review_roster",
                "pa.publish_draft", "pa.notify"]  # fmt: skip
AFTER_REVIEW_STEPS = ["pa.close_review", "pa.submit_to_payer", "pa.record_metrics"]


@pytest.mark.parametrize("outage", [timedelta(minutes=2), timedelta(hours=2)], ids=["2min", "2h"])
@pytest.mark.parametrize("step", OUTAGE_STEPS + AFTER_REVIEW_STEPS)
async def test_an_outage_at_any_step_still_reaches_review_and_approval(
    env: WorkflowEnvironment, task_queue: str, step: str, outage: timedelta
) -> None:
    """The EHR (or the knowledge base, the notifier, the payer, Postgres) down for 2 minutes or 2 hours
    at one step: the workflow waits and carries on, or, past the step's budget, takes its fallback;
    it never fails."""
    tag = f"outage-{uuid.uuid4().hex[:6]}"
    after_review = step in AFTER_REVIEW_STEPS
    handle = await start(env, task_queue, tag=tag)
    if after_review:  # the outage begins as the reviewer approves
        await awaiting_review(handle)
    outages[tag] = (step, await env.get_current_time() + outage)
    if after_review:
        await handle.signal(PriorAuthWorkflow.approve, ReviewAction(reviewer_id=STAFF))
    await env.sleep(outage + timedelta(minutes=3))  # past the outage and the next capped retry
    if not after_review:
        await awaiting_review(handle)
        status = await handle.query(PriorAuthWorkflow.status)
        long = outage > timedelta(minutes=30)  # beyond the budgets of the steps that have a fallback
        if step == "pa.read_context":
            assert status.partial_context == long
            assert len(status.missing_resource_types) == (7 if long else 0)
        elif step == "pa.retrieve_evidence":
            assert any("knowledge base was unavailable" in m for m in status.missing_information) == long
        else:
            assert not status.partial_context
        await handle.signal(PriorAuthWorkflow.approve, ReviewAction(reviewer_id=STAFF))
    assert (await handle.result()).status.stage == "approved"
    assert attempts[(handle.id, step if step != "pa.read_context" else f"{step}:Condition")] > 1

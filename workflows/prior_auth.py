"""PriorAuthWorkflow (seed P2, P16): one workflow per order, id `prior-auth-<order id>`.

order -> patient context (six FHIR types, each retried on its own, partial context flagged) -> clinical
evidence and payer criteria from the knowledge base -> Frontier draft through the gateway (two
attempts, then a pre-filled template for staff) -> preliminary DocumentReference + review Task ->
notification -> staff review (signals or the validated `review` update; reminder at 4 h, supervisor
escalation at 8 h, expiry at the payer decision deadline) -> on approval the document becomes final and
the PAS Claim goes to the payer (pended: followed up hourly); on rejection nothing is submitted.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities, RecordAuditInput
    from activities.llm import DraftInput, DraftOutput, LlmActivities
    from activities.prior_auth import PriorAuthActivities
    from careflow.llm.tasks import PaJustification, PaJustificationInput
    from careflow.llm.types import Evidence, Tier
    from careflow.models.audit import AuditAction, AuditEvent, AuditEventType, AuditOutcome
    from careflow.models.prior_auth import (
        CONTEXT_TYPES,
        OBSERVATION_CONTEXT,
        ClinicalEvidence,
        CloseReviewRequest,
        ContextPart,
        ContextRequest,
        CriterionRow,
        Draft,
        EscalationRequest,
        EvidenceRequest,
        MetricsRecord,
        NotifyRequest,
        OrderInfo,
        PayerInquiry,
        PayerOutcome,
        PayerSubmission,
        PriorAuthInput,
        PriorAuthOutput,
        PriorAuthStatus,
        Priority,
        PublishDraftRequest,
        ReviewAction,
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
    from workflows import retry_rules
    from workflows import search_attributes as sa

WORKFLOW_ID_PREFIX = "prior-auth-"
PIPELINE = "prior-auth"
PIPELINE_TEAM = "careflow-pipelines"
REMIND_AFTER = timedelta(hours=4)
ESCALATE_AFTER = timedelta(hours=8)
# Payer decision deadlines (CMS-0057-F): 72 hours expedited, 7 calendar days standard.
DECISION_DEADLINE = {Priority.EXPEDITED: timedelta(hours=72), Priority.STANDARD: timedelta(days=7)}
PAYER_FOLLOW_UP = timedelta(hours=1)


def workflow_id(order_id: str) -> str:
    return WORKFLOW_ID_PREFIX + order_id


def template_draft(
    order: OrderInfo, context: list[ContextPart], criteria: list[str], missing: list[str], revision: int
) -> Draft:
    """The pre-filled template staff complete when the AI draft failed: facts copied from the order and
    the record summaries, every payer criterion left `unknown` for the reviewer to judge."""
    conditions = [e for p in context if p.resource_type == "Condition" for e in p.entries]
    treatments = [
        e for p in context if p.resource_type in ("MedicationRequest", "Procedure") for e in p.entries
    ]
    diagnoses = ", ".join(f"{d.display or d.code} ({d.code})" for d in order.diagnoses) or "[diagnosis]"
    lines = [
        "To: the payer, utilization management",
        f"Re: Prior authorization request for {order.requested_item} (order {order.order_id})",
        "",
        "TEMPLATE: the AI draft was unavailable. Complete every [bracketed] part before approving.",
        "",
        f"We request prior authorization of {order.requested_item} for this patient, "
        f"diagnosed with {diagnoses}.",
        "",
        "Diagnoses on record:",
        *([f"- {e.summary} [{e.reference}]" for e in conditions] or ["- [none found: add]"]),
        "",
        "Prior and current treatments:",
        *([f"- {e.summary} [{e.reference}]" for e in treatments] or ["- [none found: add]"]),
        "",
        "Payer criteria:",
        *([f"- {c}: [met / not met: cite the record]" for c in criteria] or ["- [payer criteria: add]"]),
        "",
        "[Clinical rationale]",
    ]
    return Draft(
        revision=revision,
        letter="\n".join(lines),
        criteria=[CriterionRow(criterion=c, status="unknown") for c in criteria],
        citations=[e.reference for e in conditions + treatments],
        missing_information=[*missing, "AI draft unavailable: pre-filled template, criteria to be assessed."],
        template=True,
        model="template",
        model_version="1",
    )


def _evidence(context: list[ContextPart]) -> list[Evidence]:
    return [
        Evidence(id=e.reference, kind="fhir", title=p.resource_type, text=e.summary)
        for p in context
        for e in p.entries
    ]


def _failure_type(exc: ActivityError) -> str | None:
    return exc.cause.type if isinstance(exc.cause, ApplicationError) else None


@workflow.defn(name="PriorAuthWorkflow")
class PriorAuthWorkflow:
    def __init__(self) -> None:
        self._status = PriorAuthStatus()
        self._inp = PriorAuthInput(order_id="")
        self._roster = ReviewRoster()
        self._pending: ReviewDecision | None = None
        self._ignored: list[tuple[ReviewRequest, str]] = []
        self._ignored_audited = 0
        self._decisions = 0
        self._order: OrderInfo | None = None
        self._draft_in_review: Draft | None = None
        self._base_missing: list[str] = []  # what the workflow itself found missing (context, KB, payer)

    # -- the run -----------------------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: PriorAuthInput) -> PriorAuthOutput:
        self._inp = inp
        s = self._status
        s.order_id, s.priority = inp.order_id, inp.priority
        s.received_at = workflow.now()
        s.deadline = s.received_at + DECISION_DEADLINE[inp.priority]
        self._visibility(Stage.RECEIVED)

        try:
            order = await workflow.execute_activity_method(
                PriorAuthActivities.find_order,
                inp.order_id,
                **retry_rules.PA_INTAKE.options(),
            )
            self._order = order
        except ActivityError as exc:
            if _failure_type(exc) not in ("OrderNotFound", "OrderNotCoded"):
                raise
            s.missing_information = ["The order was not found in the EHR (or names no coded item)."]
            self._visibility(Stage.ORDER_NOT_FOUND)
            return PriorAuthOutput(order_id=inp.order_id, status=s)

        self._visibility(Stage.EXTRACTING)
        context = await self._extract_context(order)
        coverage = next((p for p in context if p.resource_type == "Coverage"), None)
        payer_ref = coverage.payer_ref if coverage else None
        s.payer = (coverage.payer_name if coverage else None) or None
        if s.payer is None:
            self._base_missing.append("No payer on the patient's coverage: the payer must be confirmed.")

        self._visibility(Stage.RETRIEVING)
        evidence = await self._retrieve(order)
        self._base_missing += evidence.missing_information

        self._visibility(Stage.DRAFTING)
        draft = await self._draft(order, context, evidence, revision=0, comments="")
        roster = self._roster = await workflow.execute_activity_method(
            PriorAuthActivities.review_roster,
            **retry_rules.PA_STEP.options(),
        )
        staff = roster.of_role("pa-staff")
        # Spread reviews over the PA staff deterministically (same order, same assignee).
        assignee = staff[sum(map(ord, order.order_id)) % len(staff)] if staff else None
        records = await self._publish(order, draft, assignee, None)
        s.draft_ready_at = workflow.now()
        self._visibility(Stage.AWAITING_REVIEW)
        await self._notify("notify-review", "pa-review", assignee, records.task_id, draft)
        await self._record_metrics(order, draft, None, "awaiting_review")

        decision = await self._review_loop(order, context, evidence, draft, assignee, records)
        assert self._draft_in_review is not None
        draft = self._draft_in_review  # the revision in review when it ended
        if decision is None:
            s.decided_at = workflow.now()
            await self._close("expired", records, None)
            self._visibility(Stage.EXPIRED)
            await self._record_metrics(order, draft, None, "expired")
            return self._finish(order)
        if decision.action == "reject":
            await self._close("rejected", records, decision)
            self._visibility(Stage.REJECTED)
            await self._record_metrics(order, draft, None, "rejected")
            return self._finish(order)

        final_letter = decision.edited_letter or draft.letter
        await self._close("approved", records, decision, final_letter)
        outcome = await self._submit(order, decision, payer_ref, records, final_letter, draft)
        await self._record_metrics(
            order, draft, final_letter, outcome.outcome if outcome else "submission_failed"
        )
        return self._finish(order)

    # -- steps -------------------------------------------------------------------------------------
    async def _extract_context(self, order: OrderInfo) -> list[ContextPart]:
        async def read(rtype: str) -> ContextPart | None:
            try:
                return await workflow.execute_activity_method(
                    PriorAuthActivities.read_context,
                    ContextRequest(patient_ref=order.patient_ref, resource_type=rtype),
                    **retry_rules.PA_CONTEXT_READ.options(),
                )
            except ActivityError:
                return None

        types: tuple[str, ...] = CONTEXT_TYPES
        if workflow.patched("pa-observation-context"):  # histories before it read six types
            types = (*CONTEXT_TYPES, OBSERVATION_CONTEXT)
        parts = await asyncio.gather(*(read(t) for t in types))
        missing = [t for t, p in zip(types, parts, strict=True) if p is None]
        if missing:
            s = self._status
            s.partial_context, s.missing_resource_types = True, missing
            self._base_missing.append(
                "Partial patient context: the EHR did not return "
                + ", ".join(missing)
                + " within 30 minutes."
            )
        return [p for p in parts if p is not None]

    async def _retrieve(self, order: OrderInfo) -> ClinicalEvidence:
        try:
            return await workflow.execute_activity_method(
                PriorAuthActivities.retrieve_evidence,
                EvidenceRequest(
                    tenant_id=self._inp.tenant_id,
                    requested_item=order.requested_item,
                    item_code=order.item.code,
                    diagnoses=[d.display or d.code for d in order.diagnoses],
                ),
                **retry_rules.PA_EVIDENCE.options(),
            )
        except ActivityError:
            return ClinicalEvidence(
                missing_information=[
                    "The knowledge base was unavailable: payer criteria and guidelines unknown."
                ]
            )

    async def _draft(
        self,
        order: OrderInfo,
        context: list[ContextPart],
        evidence: ClinicalEvidence,
        revision: int,
        comments: str,
    ) -> Draft:
        wid = workflow.info().workflow_id
        task_input = PaJustificationInput(
            requested_item=order.requested_item,
            payer=self._status.payer or "",
            order_id=order.order_id,
            criteria=evidence.criteria,
            reviewer_comments=comments,
        )
        missing = [*self._base_missing]
        try:
            out = await workflow.execute_activity_method(
                LlmActivities.draft,
                DraftInput(
                    team_id=PIPELINE_TEAM,
                    use_case=PIPELINE,
                    tier=Tier.FRONTIER,
                    task="pa_justification",
                    task_input=task_input.model_dump(mode="json"),
                    evidence=[*_evidence(context), *evidence.evidence],
                    request_id=f"{wid}:draft" + (f"-r{revision}" if revision else ""),
                    patient_id=order.patient_ref.removeprefix("Patient/") or None,
                ),
                **retry_rules.PA_DRAFT.options(),
            )
        except ActivityError:
            draft = template_draft(order, context, evidence.criteria, missing, revision)
        else:
            draft = self._from_output(out, missing, revision)
        self._status.template = draft.template
        self._status.missing_information = draft.missing_information
        self._status.criteria = draft.criteria
        self._status.revision = revision
        self._draft_in_review = draft
        return draft

    @staticmethod
    def _from_output(out: DraftOutput, missing: list[str], revision: int) -> Draft:
        parsed = PaJustification.model_validate(out.output)
        return Draft(
            revision=revision,
            letter=parsed.letter,
            criteria=[CriterionRow(**c.model_dump()) for c in parsed.criteria],
            citations=parsed.citations,
            missing_information=list(dict.fromkeys([*missing, *parsed.missing_information])),
            model=f"{out.provider}/{out.model}",
            model_version=out.model or "",
            request_id=out.request_id,
        )

    async def _publish(
        self, order: OrderInfo, draft: Draft, assignee: RosterMember | None, document_id: str | None
    ) -> ReviewRecords:
        records = await workflow.execute_activity_method(
            PriorAuthActivities.publish_draft,
            PublishDraftRequest(
                order=order,
                draft=draft,
                assignee=assignee,
                priority=self._inp.priority,
                document_reference_id=document_id,
            ),
            **retry_rules.PA_WRITE.options(),
        )
        self._status.document_reference_id = records.document_reference_id
        self._status.task_id = records.task_id
        return records

    async def _notify(
        self, step: str, kind: str, to: RosterMember | None, task_id: str, draft: Draft
    ) -> None:
        met = sum(1 for c in draft.criteria if c.status == "met")
        order = self._order
        assert order is not None
        await workflow.execute_activity_method(
            PriorAuthActivities.notify,
            NotifyRequest(
                step=step,
                kind=kind,
                recipient_ref=to.practitioner_ref if to else None,
                task_id=task_id,
                order_id=order.order_id,
                summary=f"Prior authorization draft for {order.item.code}: {met} of {len(draft.criteria)} "
                f"payer criteria met{' (template)' if draft.template else ''}.",
            ),
            **retry_rules.PA_NOTIFY.options(),
        )

    async def _review_loop(
        self,
        order: OrderInfo,
        context: list[ContextPart],
        evidence: ClinicalEvidence,
        draft: Draft,
        assignee: RosterMember | None,
        records: ReviewRecords,
    ) -> ReviewDecision | None:
        s = self._status
        assert s.draft_ready_at is not None and s.deadline is not None
        remind_at, escalate_at = s.draft_ready_at + REMIND_AFTER, s.draft_ready_at + ESCALATE_AFTER
        while True:
            await self._audit_ignored(order)
            decision = self._pending
            if decision is not None:
                self._pending = None
                await self._audit_decision(order, decision)
                if decision.action != "request_changes":
                    s.decided_at = workflow.now()
                    return decision
                self._visibility(Stage.REGENERATING)
                draft = await self._draft(order, context, evidence, draft.revision + 1, decision.comments)
                await self._publish(order, draft, assignee, records.document_reference_id)
                self._visibility(Stage.AWAITING_REVIEW)
                await self._notify(
                    f"notify-review-r{draft.revision}", "pa-review", assignee, records.task_id, draft
                )
                continue
            now = workflow.now()
            if now >= s.deadline:
                return None
            if not s.reminded and now >= remind_at:
                s.reminded = True
                await self._notify("reminder", "pa-reminder", assignee, records.task_id, draft)
                continue
            if not s.escalated and now >= escalate_at:
                s.escalated = True
                await self._escalate(order, records, draft)
                continue
            wake = min(
                [s.deadline]
                + ([remind_at] if not s.reminded else [])
                + ([escalate_at] if not s.escalated else [])
            )
            try:
                await workflow.wait_condition(
                    lambda: self._pending is not None or len(self._ignored) > self._ignored_audited,
                    timeout=wake - now,
                )
            except TimeoutError:
                pass

    async def _escalate(self, order: OrderInfo, records: ReviewRecords, draft: Draft) -> None:
        supervisors = self._roster.of_role("pa-supervisor")
        supervisor = supervisors[0] if supervisors else None
        task_id = await workflow.execute_activity_method(
            PriorAuthActivities.escalate,
            EscalationRequest(order=order, review_task_id=records.task_id, supervisor=supervisor),
            **retry_rules.PA_WRITE.options(),
        )
        self._status.escalation_task_id = task_id
        await self._notify("escalation", "pa-escalation", supervisor, task_id, draft)

    async def _close(
        self,
        outcome: Literal["approved", "rejected", "expired"],
        records: ReviewRecords,
        decision: ReviewDecision | None,
        final_letter: str | None = None,
    ) -> None:
        s = self._status
        req = CloseReviewRequest(
            outcome=outcome,
            document_reference_id=records.document_reference_id,
            task_ids=[t for t in (s.task_id, s.escalation_task_id) if t],
            final_letter=final_letter,
            reviewer_ref=decision.reviewer_ref if decision else None,
        )
        await workflow.execute_activity_method(
            PriorAuthActivities.close_review, req, **retry_rules.PA_WRITE.options()
        )

    async def _submit(
        self,
        order: OrderInfo,
        approval: ReviewDecision,
        payer_ref: str | None,
        records: ReviewRecords,
        letter: str,
        draft: Draft,
    ) -> PayerOutcome | None:
        """Submit the approved request; None when the payer (or the claim's own data) refused it."""
        s = self._status
        assert s.deadline is not None
        self._visibility(Stage.SUBMITTING)
        try:
            outcome = await self._submit_once(
                PayerSubmission(
                    approval=approval,
                    order=order,
                    priority=self._inp.priority,
                    payer_ref=payer_ref,
                    payer_name=s.payer,
                    document_reference_id=records.document_reference_id,
                    letter=letter,
                    criteria=draft.criteria,
                )
            )
        except ActivityError as exc:
            # Only non-retryable refusals end here (a bundle the payer rejects, a claim without coverage).
            s.missing_information = [
                *s.missing_information,
                f"Payer submission refused ({_failure_type(exc) or 'error'}): staff must submit by hand.",
            ]
            self._visibility(Stage.SUBMISSION_FAILED)
            return None
        s.submitted_at = workflow.now()
        s.payer_outcome = outcome
        while outcome.outcome == "pended" and workflow.now() + PAYER_FOLLOW_UP <= s.deadline:
            self._visibility(Stage.PENDED)
            await workflow.sleep(PAYER_FOLLOW_UP)
            outcome = await workflow.execute_activity_method(
                PriorAuthActivities.inquire_payer,
                PayerInquiry(claim_response_id=outcome.claim_response_id, order_id=order.order_id),
                **retry_rules.PA_STEP.options(),
            )
            s.payer_outcome = outcome
        stage = {"approved": Stage.APPROVED, "denied": Stage.DENIED, "pended": Stage.PENDED}[outcome.outcome]
        self._visibility(stage)
        return outcome

    async def _submit_once(self, submission: PayerSubmission) -> PayerOutcome:
        return await workflow.execute_activity_method(
            PriorAuthActivities.submit_to_payer,
            submission,
            **retry_rules.PA_STEP.options(),
        )

    async def _record_metrics(
        self, order: OrderInfo, draft: Draft, final_letter: str | None, outcome: str
    ) -> None:
        s = self._status
        assert s.received_at is not None
        await workflow.execute_activity_method(
            PriorAuthActivities.record_metrics,
            MetricsRecord(
                workflow_id=workflow.info().workflow_id,
                tenant_id=self._inp.tenant_id,
                order_id=order.order_id,
                item_code=order.item.code,
                payer=s.payer,
                priority=self._inp.priority,
                started_at=s.received_at,
                draft_ready_at=s.draft_ready_at,
                decided_at=s.decided_at,
                outcome=outcome,
                revisions=draft.revision,
                template_used=draft.template,
                draft_letter=draft.letter if final_letter is not None else None,
                final_letter=final_letter,
            ),
            **retry_rules.PA_NOTIFY.options(),
        )

    def _finish(self, order: OrderInfo) -> PriorAuthOutput:
        return PriorAuthOutput(order_id=order.order_id, status=self._status)

    # -- review actions ----------------------------------------------------------------------------
    def _problem(self, req: ReviewRequest) -> str | None:
        """Why a review action cannot be accepted now (PHI-free: it reaches the caller and the audit)."""
        if self._status.stage != Stage.AWAITING_REVIEW or self._pending is not None:
            return f"the workflow is not awaiting review (stage {self._status.stage.value})"
        if not self._roster.holds_review_role(req.reviewer_id):
            return "the reviewer does not hold a prior-authorization review role"
        if req.action == "request_changes" and not req.comments.strip():
            return "request_changes needs comments"
        return None

    def _accept(self, req: ReviewRequest, via: str) -> ReviewOutcome:
        self._pending = ReviewDecision(
            action=req.action,
            reviewer_ref=reviewer_ref(req.reviewer_id),
            comments=req.comments,
            edited_letter=req.edited_letter,
            at=workflow.now(),
            revision=self._status.revision,
            via="update" if via == "update" else "signal",
        )
        self._decisions += 1
        if req.action != "request_changes":
            self._status.decision = self._pending
        next_stage = {
            "approve": Stage.SUBMITTING,
            "reject": Stage.REJECTED,
            "request_changes": Stage.REGENERATING,
        }
        self._status.stage = next_stage[req.action]
        return ReviewOutcome(accepted=True, action=req.action, stage=self._status.stage.value)

    def _on_signal(self, action: ReviewActionName, body: ReviewAction) -> None:
        req = ReviewRequest(action=action, **body.model_dump())
        problem = self._problem(req)
        if problem is None:
            self._accept(req, "signal")
        else:
            # A signal cannot be refused: it is ignored, and audited by the run loop.
            self._ignored.append((req, problem))
            self._status.ignored_actions = len(self._ignored)

    @workflow.signal(name="approve")
    def approve(self, body: ReviewAction) -> None:
        self._on_signal("approve", body)

    @workflow.signal(name="reject")
    def reject(self, body: ReviewAction) -> None:
        self._on_signal("reject", body)

    @workflow.signal(name="request_changes")
    def request_changes(self, body: ReviewAction) -> None:
        self._on_signal("request_changes", body)

    @workflow.update(name="review")
    def review(self, req: ReviewRequest) -> ReviewOutcome:
        return self._accept(req, "update")

    @review.validator
    def _validate_review(self, req: ReviewRequest) -> None:
        problem = self._problem(req)
        if problem is not None:
            raise ValueError(problem)

    @workflow.query(name="status")
    def status(self) -> PriorAuthStatus:
        return self._status

    # -- audit and visibility ----------------------------------------------------------------------
    def _review_event(self, order: OrderInfo, actor: str, outcome: AuditOutcome, detail: dict[str, str],
                      at: datetime) -> AuditEvent:  # fmt: skip
        return AuditEvent(
            event_type=AuditEventType.REVIEWER_ACTION,
            actor=actor,
            actor_type="user",
            action=AuditAction.EXECUTE,
            outcome=outcome,
            patient_id=order.patient_ref.removeprefix("Patient/"),
            resource_type="Task",
            resource_id=self._status.task_id,
            workflow_id=workflow.info().workflow_id,
            detail=detail,
            occurred_at=at,  # explicit: the model's default clock is not allowed in workflow code
        )

    async def _audit_decision(self, order: OrderInfo, d: ReviewDecision) -> None:
        detail = {
            "action": d.action,
            "via": d.via,
            "revision": str(d.revision),
            "edited": str(bool(d.edited_letter)),
        }
        await self._audit(
            self._review_event(order, d.reviewer_ref, AuditOutcome.SUCCESS, detail, d.at),
            f"review-{self._decisions}-{d.action}",
        )

    async def _audit_ignored(self, order: OrderInfo) -> None:
        while self._ignored_audited < len(self._ignored):
            req, problem = self._ignored[self._ignored_audited]
            self._ignored_audited += 1
            detail = {"action": req.action, "via": "signal", "reason": problem}
            event = self._review_event(
                order, reviewer_ref(req.reviewer_id), AuditOutcome.REJECTED, detail, workflow.now()
            )
            await self._audit(event, f"ignored-signal-{self._ignored_audited}")

    async def _audit(self, event: AuditEvent, step: str) -> None:
        await workflow.execute_activity_method(
            AuditActivities.record,
            RecordAuditInput(event=event, step=step),
            **retry_rules.PA_NOTIFY.options(),
        )

    def _visibility(self, stage: Stage) -> None:
        """Stage and PHI-free facts as search attributes (where the server has them) and memo."""
        self._status.stage = stage
        s, order = self._status, self._order
        if self._inp.search_attributes:
            pairs: list[SearchAttributeUpdate[str]] = [
                sa.PIPELINE.value_set(PIPELINE),
                sa.STAGE.value_set(stage.value),
                sa.TENANT.value_set(self._inp.tenant_id),
                sa.PRIORITY.value_set(self._inp.priority.value),
            ]
            if s.payer:
                pairs.append(sa.PAYER.value_set(s.payer))
            workflow.upsert_search_attributes(pairs)
        met = sum(1 for c in s.criteria if c.status == "met")
        workflow.upsert_memo(
            {
                "summary": {
                    "pipeline": PIPELINE,
                    "stage": stage.value,
                    "item": order.item.code if order else None,
                    "payer": s.payer,
                    "priority": self._inp.priority.value,
                    "criteria_met": f"{met}/{len(s.criteria)}",
                    "missing_information": len(s.missing_information),
                    "partial_context": s.partial_context,
                    "template": s.template,
                    "revision": s.revision,
                }
            }
        )

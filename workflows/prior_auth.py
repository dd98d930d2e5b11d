"""PriorAuthWorkflow (seed P2, P16): one workflow per order, id `prior-auth-<order id>`.

order -> patient context (six FHIR types, each retried on its own, partial context flagged) -> clinical
evidence and payer criteria from the knowledge base -> Frontier draft through the gateway (two
attempts, then a pre-filled template for staff) -> preliminary DocumentReference + review Task ->
notification -> staff review (signals or the validated `review` update; reminder at 4 h, supervisor
escalation at 8 h, expiry at the payer decision deadline) -> on approval the document becomes final and
the PAS Claim goes to the payer (pended: followed up hourly); on rejection nothing is submitted.

Orchestration only: the letter, the review rules, the deadlines and the audit events are
careflow.prior_auth's pure functions.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities, RecordAuditInput
    from activities.llm import DraftInput, LlmActivities
    from activities.prior_auth import PriorAuthActivities
    from careflow.llm.teams import PIPELINES_TEAM
    from careflow.llm.types import Tier
    from careflow.models.audit import AuditEvent
    from careflow.models.prior_auth import (
        CONTEXT_TYPES,
        OBSERVATION_CONTEXT,
        PIPELINE,
        ClinicalEvidence,
        ContextPart,
        ContextRequest,
        Draft,
        EscalationRequest,
        OrderInfo,
        PayerInquiry,
        PayerOutcome,
        PriorAuthInput,
        PriorAuthOutput,
        PriorAuthStatus,
        PublishDraftRequest,
        ReviewAction,
        ReviewActionName,
        ReviewDecision,
        ReviewOutcome,
        ReviewRecords,
        ReviewRequest,
        RosterMember,
        Stage,
    )
    from careflow.prior_auth import criteria, deadlines, letters, metrics, missing, summaries, visibility
    from careflow.prior_auth import review as pa_review
    from workflows import retry_rules
    from workflows import search_attributes as sa


@workflow.defn(name="PriorAuthWorkflow")
class PriorAuthWorkflow:
    def __init__(self) -> None:
        self._status = PriorAuthStatus()
        self._inp = PriorAuthInput(order_id="")
        self._desk = pa_review.ReviewDesk()  # review actions: accepted, ignored, audited
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
        s.deadline = s.received_at + deadlines.DECISION_DEADLINE[inp.priority]
        self._visibility(Stage.RECEIVED)

        try:
            order = self._order = await retry_rules.execute(
                retry_rules.PA_INTAKE, PriorAuthActivities.find_order, inp.order_id
            )
        except ActivityError as exc:
            if retry_rules.failure_type(exc) not in ("OrderNotFound", "OrderNotCoded"):
                raise
            s.missing_information = [missing.ORDER_NOT_FOUND]
            self._visibility(Stage.ORDER_NOT_FOUND)
            return PriorAuthOutput(order_id=inp.order_id, status=s)

        self._visibility(Stage.EXTRACTING)
        context = await self._extract_context(order)
        payer_ref, s.payer = summaries.coverage_payer(context)
        if s.payer is None:
            self._base_missing.append(missing.NO_PAYER)

        self._visibility(Stage.RETRIEVING)
        evidence = await self._retrieve(order)
        self._base_missing += evidence.missing_information

        self._visibility(Stage.DRAFTING)
        draft = await self._draft(order, context, evidence, revision=0, comments="")
        roster = self._desk.roster = await workflow.execute_activity_method(
            PriorAuthActivities.review_roster, **retry_rules.PA_STEP.options()
        )
        assignee = pa_review.assignee(roster.of_role("pa-staff"), order.order_id)
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
            req = ContextRequest(patient_ref=order.patient_ref, resource_type=rtype)
            try:
                return await retry_rules.execute(
                    retry_rules.PA_CONTEXT_READ, PriorAuthActivities.read_context, req
                )
            except ActivityError:
                return None

        types: tuple[str, ...] = CONTEXT_TYPES
        if workflow.patched("pa-observation-context"):  # histories before it read six types
            types = (*CONTEXT_TYPES, OBSERVATION_CONTEXT)
        parts = await asyncio.gather(*(read(t) for t in types))
        absent = [t for t, p in zip(types, parts, strict=True) if p is None]
        if absent:
            s = self._status
            s.partial_context, s.missing_resource_types = True, absent
            self._base_missing.append(missing.partial_context(absent))
        return [p for p in parts if p is not None]

    async def _retrieve(self, order: OrderInfo) -> ClinicalEvidence:
        req = criteria.evidence_request(self._inp.tenant_id, order)
        try:
            return await retry_rules.execute(
                retry_rules.PA_EVIDENCE, PriorAuthActivities.retrieve_evidence, req
            )
        except ActivityError:
            return ClinicalEvidence(missing_information=[missing.KB_UNAVAILABLE])

    async def _draft(self, order: OrderInfo, context: list[ContextPart], evidence: ClinicalEvidence,
                     revision: int, comments: str) -> Draft:  # fmt: skip
        task_input = letters.justification_input(order, self._status.payer, evidence.criteria, comments)
        found = [*self._base_missing]
        req = DraftInput.of(
            task_input,
            team_id=PIPELINES_TEAM,
            use_case=PIPELINE,
            tier=Tier.FRONTIER,
            evidence=[*letters.context_evidence(context), *evidence.evidence],
            request_id=letters.draft_request_id(workflow.info().workflow_id, revision),
            patient_id=order.patient_ref.removeprefix("Patient/") or None,
        )
        try:
            out = await retry_rules.execute(retry_rules.PA_DRAFT, LlmActivities.draft, req)
        except ActivityError:
            draft = letters.template_draft(order, context, evidence.criteria, found, revision)
        else:
            draft = letters.ai_draft(out.output, out.provider, out.model, out.request_id, found, revision)
        s = self._status
        s.template, s.missing_information, s.criteria, s.revision = (
            draft.template, draft.missing_information, draft.criteria, revision
        )  # fmt: skip
        self._draft_in_review = draft
        return draft

    async def _publish(self, order: OrderInfo, draft: Draft, assignee: RosterMember | None,
                       document_id: str | None) -> ReviewRecords:  # fmt: skip
        req = PublishDraftRequest(order=order, draft=draft, assignee=assignee, priority=self._inp.priority,
                                  document_reference_id=document_id)  # fmt: skip
        records = await retry_rules.execute(retry_rules.PA_WRITE, PriorAuthActivities.publish_draft, req)
        self._status.document_reference_id = records.document_reference_id
        self._status.task_id = records.task_id
        return records

    async def _notify(
        self, step: str, kind: str, to: RosterMember | None, task_id: str, draft: Draft
    ) -> None:
        assert self._order is not None
        req = letters.notification(step, kind, to, task_id, self._order, draft)
        await retry_rules.execute(retry_rules.PA_NOTIFY, PriorAuthActivities.notify, req)

    async def _review_loop(self, order: OrderInfo, context: list[ContextPart], evidence: ClinicalEvidence,
                           draft: Draft, assignee: RosterMember | None, records: ReviewRecords,
                           ) -> ReviewDecision | None:  # fmt: skip
        s = self._status
        assert s.draft_ready_at is not None and s.deadline is not None
        clock = deadlines.ReviewClock.starting(s.draft_ready_at, s.deadline)
        while True:
            await self._audit_ignored(order)
            decision = self._desk.take()
            if decision is not None:
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
            due = clock.due(now, s.reminded, s.escalated)
            if due == "expire":
                return None
            if due == "remind":
                s.reminded = True
                await self._notify("reminder", "pa-reminder", assignee, records.task_id, draft)
                continue
            if due == "escalate":
                s.escalated = True
                await self._escalate(order, records, draft)
                continue
            try:
                await workflow.wait_condition(
                    lambda: self._desk.waiting,
                    timeout=clock.next_due(s.reminded, s.escalated) - now,
                )
            except TimeoutError:
                pass

    async def _escalate(self, order: OrderInfo, records: ReviewRecords, draft: Draft) -> None:
        supervisor = pa_review.supervisor(self._desk.roster)
        req = EscalationRequest(order=order, review_task_id=records.task_id, supervisor=supervisor)
        task_id = await retry_rules.execute(retry_rules.PA_WRITE, PriorAuthActivities.escalate, req)
        self._status.escalation_task_id = task_id
        await self._notify("escalation", "pa-escalation", supervisor, task_id, draft)

    async def _close(self, outcome: Literal["approved", "rejected", "expired"], records: ReviewRecords,
                     decision: ReviewDecision | None, final_letter: str | None = None) -> None:  # fmt: skip
        req = pa_review.close_request(outcome, self._status, records, decision, final_letter)
        await retry_rules.execute(retry_rules.PA_WRITE, PriorAuthActivities.close_review, req)

    async def _submit(self, order: OrderInfo, approval: ReviewDecision, payer_ref: str | None,
                      records: ReviewRecords, letter: str, draft: Draft) -> PayerOutcome | None:  # fmt: skip
        """Submit the approved request; None when the payer (or the claim's own data) refused it."""
        s = self._status
        assert s.deadline is not None
        self._visibility(Stage.SUBMITTING)
        req = pa_review.submission(approval, order, self._inp.priority, payer_ref, s, records, letter, draft)
        try:
            outcome = await retry_rules.execute(retry_rules.PA_STEP, PriorAuthActivities.submit_to_payer, req)
        except ActivityError as exc:
            # Only non-retryable refusals end here (a bundle the payer rejects, a claim without coverage).
            s.missing_information = [
                *s.missing_information,
                missing.submission_refused(retry_rules.failure_type(exc)),
            ]
            self._visibility(Stage.SUBMISSION_FAILED)
            return None
        s.submitted_at = workflow.now()
        s.payer_outcome = outcome
        while outcome.outcome == "pended" and deadlines.follow_up_in_time(workflow.now(), s.deadline):
            self._visibility(Stage.PENDED)
            await workflow.sleep(deadlines.PAYER_FOLLOW_UP)
            inquiry = PayerInquiry(claim_response_id=outcome.claim_response_id, order_id=order.order_id)
            outcome = await retry_rules.execute(
                retry_rules.PA_STEP, PriorAuthActivities.inquire_payer, inquiry
            )
            s.payer_outcome = outcome
        self._visibility(visibility.payer_stage(outcome))
        return outcome

    async def _record_metrics(self, order: OrderInfo, draft: Draft, final_letter: str | None,
                              outcome: str) -> None:  # fmt: skip
        wid, inp = workflow.info().workflow_id, self._inp
        record = metrics.metrics_record(wid, inp.tenant_id, order, self._status, inp.priority, draft,
                                        final_letter, outcome)  # fmt: skip
        await retry_rules.execute(retry_rules.PA_NOTIFY, PriorAuthActivities.record_metrics, record)

    def _finish(self, order: OrderInfo) -> PriorAuthOutput:
        return PriorAuthOutput(order_id=order.order_id, status=self._status)

    # -- review actions ----------------------------------------------------------------------------
    def _on_signal(self, action: ReviewActionName, body: ReviewAction) -> None:
        # A signal cannot be refused: an action that cannot be accepted is ignored, then audited.
        self._desk.signal(ReviewRequest(action=action, **body.model_dump()), workflow.now(), self._status)

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
        return self._desk.accept(req, "update", workflow.now(), self._status)

    @review.validator
    def _validate_review(self, req: ReviewRequest) -> None:
        problem = self._desk.problem(req, self._status)
        if problem is not None:
            raise ValueError(problem)

    @workflow.query(name="status")
    def status(self) -> PriorAuthStatus:
        return self._status

    # -- audit and visibility ----------------------------------------------------------------------
    async def _audit_decision(self, order: OrderInfo, d: ReviewDecision) -> None:
        event = pa_review.decision_event(order, d, self._status.task_id, workflow.info().workflow_id)
        await self._audit(event, f"review-{self._desk.decisions}-{d.action}")

    async def _audit_ignored(self, order: OrderInfo) -> None:
        for n, req, problem in self._desk.unaudited():
            wid, task_id = workflow.info().workflow_id, self._status.task_id
            event = pa_review.ignored_event(order, req, problem, workflow.now(), task_id, wid)
            await self._audit(event, f"ignored-signal-{n}")

    async def _audit(self, event: AuditEvent, step: str) -> None:
        await retry_rules.execute(
            retry_rules.PA_NOTIFY, AuditActivities.record, RecordAuditInput(event=event, step=step)
        )

    def _visibility(self, stage: Stage) -> None:
        """Stage and PHI-free facts as search attributes (where the server has them) and memo."""
        self._status.stage = stage
        s, order = self._status, self._order
        if self._inp.search_attributes:
            workflow.upsert_search_attributes(
                sa.updates(stage.value, pipeline=PIPELINE, tenant_id=self._inp.tenant_id,
                           priority=self._inp.priority.value, payer=s.payer or None)
            )  # fmt: skip
        item = order.item.code if order else None
        workflow.upsert_memo(
            {"summary": visibility.memo_summary(PIPELINE, stage, s, item, self._inp.priority)}
        )

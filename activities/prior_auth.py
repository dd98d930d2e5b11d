"""pa.* activities of the prior-authorization pipeline, built once per worker process.

Reads go through the process's FhirClient (each one audited by it); the workflow's writes are
conditional creates keyed by `step_identifier(workflow id, step)`, so a retried activity or a worker
killed mid-step finds what its first attempt made.  Every resource is validated with fhir.resources
(R4B) before it is sent.  Nothing is submitted to a payer without the staff approval this activity
receives with the request.  What the resources say, and how the record is summarised, is
careflow.prior_auth's: these are the adapters to the EHR, the knowledge base, the payer and Postgres.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fhir import application_error
from careflow.config import Settings
from careflow.fhir import codes
from careflow.fhir.client import FhirClient
from careflow.fhir.errors import FhirError
from careflow.fhir.resources import InvalidResource, validate_resource
from careflow.idempotency import step_identifier, step_key
from careflow.kb import store as kb
from careflow.models.prior_auth import (
    OBSERVATION_CONTEXT,
    PA_REVIEW_ROLES,
    ClinicalEvidence,
    CloseReviewRequest,
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
    PublishDraftRequest,
    ReviewRecords,
    ReviewRoster,
    RosterMember,
)
from careflow.notify.notifier import Notifier
from careflow.payer.client import PayerClient, PayerDecision, PayerError, PayerRejected
from careflow.payer.pas import claim_identifier
from careflow.prior_auth import criteria, missing, resources
from careflow.prior_auth import store as pa_store
from careflow.prior_auth.summaries import (
    MEASUREMENT_SEARCH,
    ORDER_TYPES,
    OrderNotCoded,
    latest_measurements,
    order_info,
    payer_refs,
    ref,
    summarise,
)


def _workflow_id() -> str:
    wid = activity.info().workflow_id
    if not wid:
        raise ApplicationError("pa activities key their writes by workflow id", non_retryable=True)
    return wid


def _validated(resource: dict[str, Any]) -> dict[str, Any]:
    try:
        validate_resource(resource)
    except InvalidResource as exc:
        raise ApplicationError(f"invalid {resource.get('resourceType')}: {exc}", non_retryable=True) from None
    return resource


class PriorAuthActivities:
    """Built once per worker process around its FhirClient, pool, notifier and payer endpoint."""

    def __init__(
        self,
        fhir: FhirClient,
        pool: asyncpg.Pool,
        notifier: Notifier,
        settings: Settings,
        payer: PayerClient | None = None,
    ) -> None:
        self._fhir = fhir
        self._pool = pool
        self._notifier = notifier
        self._settings = settings
        self._payer = payer

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.find_order,
            self.read_context,
            self.retrieve_evidence,
            self.review_roster,
            self.publish_draft,
            self.escalate,
            self.notify,
            self.close_review,
            self.submit_to_payer,
            self.inquire_payer,
            self.record_metrics,
        ]

    @property
    def payer(self) -> PayerClient:
        if self._payer is None:
            self._payer = PayerClient(self._settings.payer_base_url)
        return self._payer

    # -- context -----------------------------------------------------------------------------------
    @activity.defn(name="pa.find_order")
    async def find_order(self, order_id: str) -> OrderInfo:
        wid = activity.info().workflow_id
        try:
            for rtype in ORDER_TYPES:
                found = await self._fhir.search(
                    rtype, {"identifier": f"{codes.ORDER_ID}|{order_id}"}, workflow_id=wid
                )
                if found:
                    return order_info(order_id, found[0])
        except FhirError as exc:
            raise application_error(exc) from None
        except OrderNotCoded as exc:
            raise ApplicationError(str(exc), type="OrderNotCoded", non_retryable=True) from None
        raise ApplicationError("no order with this identifier", type="OrderNotFound", non_retryable=True)

    @activity.defn(name="pa.read_context")
    async def read_context(self, req: ContextRequest) -> ContextPart:
        """One resource type of the patient's context (the workflow retries each type on its own)."""
        wid = _workflow_id()
        patient_id = req.patient_ref.removeprefix("Patient/")
        try:
            found = await self._fhir.patient_context(
                patient_id,
                [req.resource_type],
                params=MEASUREMENT_SEARCH,
                request_id=step_key(wid, "context"),
                workflow_id=wid,
            )
            records = found[req.resource_type]
            if req.resource_type == OBSERVATION_CONTEXT:
                records = latest_measurements(records)
            part = ContextPart(
                resource_type=req.resource_type,
                entries=[ContextEntry(reference=ref(r), summary=summarise(r)) for r in records],
            )
            if req.resource_type == "Coverage" and (payors := payer_refs(records)):
                part.payer_ref = payors[0]
                if payors[0].startswith("Organization/"):
                    # The payer is directory data, not the patient's: its name goes on the claim.
                    org = await self._fhir.read(
                        "Organization", payors[0].removeprefix("Organization/"), workflow_id=wid
                    )
                    part.payer_name = org.get("name")
        except FhirError as exc:
            raise application_error(exc) from None
        return part

    # -- knowledge base ----------------------------------------------------------------------------
    @activity.defn(name="pa.retrieve_evidence")
    async def retrieve_evidence(self, req: EvidenceRequest) -> ClinicalEvidence:
        out = ClinicalEvidence()
        policies = await kb.retrieve(
            self._pool,
            req.tenant_id,
            criteria.policy_query(req.requested_item, req.item_code, req.diagnoses),
            k=max(req.k, 10),
            doc_types=list(criteria.POLICY_TYPES),
        )
        policy = criteria.policy_criteria(policies, req.requested_item, req.item_code)
        out.policy_document, out.criteria = policy.document, policy.criteria
        out.evidence += [kb.as_evidence(c) for c in policy.chunks]
        if not out.criteria:
            out.missing_information.append(missing.no_criteria(req.requested_item))
        guidelines = await kb.retrieve(
            self._pool,
            req.tenant_id,
            criteria.guideline_query(req.requested_item, req.diagnoses),
            k=req.k,
            doc_types=list(criteria.GUIDELINE_TYPES),
        )
        out.evidence += [kb.as_evidence(c) for c in guidelines]
        if not guidelines:
            out.missing_information.append(missing.no_guideline(req.requested_item))
        return out

    # -- review records ----------------------------------------------------------------------------
    @activity.defn(name="pa.review_roster")
    async def review_roster(self) -> ReviewRoster:
        wid = activity.info().workflow_id
        members: list[RosterMember] = []
        try:
            for role in PA_REVIEW_ROLES:
                found = await self._fhir.search(
                    "PractitionerRole",
                    {"code": f"{codes.ROLE_SYSTEM}|{role}"},
                    workflow_id=wid,
                )
                for r in (r for r in found if r.get("active", True)):
                    practitioner = (r.get("practitioner") or {}).get("reference", "")
                    if practitioner.startswith("Practitioner/"):
                        members.append(
                            RosterMember(practitioner_ref=practitioner, role_ref=ref(r), role=role)
                        )
        except FhirError as exc:
            raise application_error(exc) from None
        members.sort(key=lambda m: (m.role, m.practitioner_ref))
        return ReviewRoster(members=members)

    @activity.defn(name="pa.publish_draft")
    async def publish_draft(self, req: PublishDraftRequest) -> ReviewRecords:
        """The draft as a preliminary DocumentReference and the review Task (first revision), or the
        DocumentReference's next version (later revisions); both conditional on workflow-step ids."""
        wid = _workflow_id()
        doc = _validated(resources.draft_document(req.order, req.draft, datetime.now(UTC)))
        try:
            if req.document_reference_id is None:
                created, _ = await self._fhir.conditional_create(
                    doc, step_identifier(wid, "draft-document"), workflow_id=wid
                )
            else:
                current = await self._fhir.read(
                    "DocumentReference", req.document_reference_id, workflow_id=wid
                )
                created = await self._fhir.update(resources.revised_document(doc, current), workflow_id=wid)
            task = resources.task(
                req.order, "review-pa-draft", "Review prior authorization draft", "pa-staff", req.assignee,
                req.priority == "expedited", [("draft", f"DocumentReference/{created['id']}")],
                datetime.now(UTC),
            )  # fmt: skip
            made, _ = await self._fhir.conditional_create(
                _validated(task), step_identifier(wid, "review-task"), workflow_id=wid
            )
        except FhirError as exc:
            raise application_error(exc) from None
        return ReviewRecords(document_reference_id=created["id"], task_id=made["id"])

    @activity.defn(name="pa.escalate")
    async def escalate(self, req: EscalationRequest) -> str:
        """A new Task for the PA supervisor role, pointing at the overdue review Task."""
        wid = _workflow_id()
        overdue = f"Task/{req.review_task_id}"
        description = "Overdue prior authorization review: escalated to the PA supervisor"
        task = resources.task(
            req.order, "escalated-pa-review", description, "pa-supervisor", req.supervisor, True,
            [("review-task", overdue)], datetime.now(UTC), part_of=overdue,
        )  # fmt: skip
        try:
            made, _ = await self._fhir.conditional_create(
                _validated(task), step_identifier(wid, "escalation-task"), workflow_id=wid
            )
        except FhirError as exc:
            raise application_error(exc) from None
        return str(made["id"])

    @activity.defn(name="pa.notify")
    async def notify(self, req: NotifyRequest) -> bool:
        wid = _workflow_id()
        sent = await self._notifier.send(
            dedup_key=step_key(wid, req.step),
            kind=req.kind,
            recipient_id=req.recipient_ref,
            workflow_id=wid,
            body={
                "kind": req.kind,
                "task": f"Task/{req.task_id}",
                "order_id": req.order_id,
                "workflow_id": wid,
                "summary": req.summary,
            },
        )
        return sent.delivered

    @activity.defn(name="pa.close_review")
    async def close_review(self, req: CloseReviewRequest) -> None:
        """Approved: the document becomes final with the approved text and the Tasks complete.
        Rejected or expired: the Tasks are cancelled and the document stays preliminary."""
        wid = activity.info().workflow_id
        try:
            if req.outcome == "approved":
                assert req.final_letter is not None
                doc = await self._fhir.read("DocumentReference", req.document_reference_id, workflow_id=wid)
                final = resources.approved_document(doc, req.final_letter, req.reviewer_ref)
                await self._fhir.update(_validated(final), workflow_id=wid)
            for task_id in req.task_ids:
                task = await self._fhir.read("Task", task_id, workflow_id=wid)
                closed = resources.closed_task(task, req.outcome, req.reviewer_ref, datetime.now(UTC))
                if closed is not None:  # None: a retry after this Task was closed
                    await self._fhir.update(_validated(closed), workflow_id=wid)
        except FhirError as exc:
            raise application_error(exc) from None

    # -- payer -------------------------------------------------------------------------------------
    @activity.defn(name="pa.submit_to_payer")
    async def submit_to_payer(self, req: PayerSubmission) -> PayerOutcome:
        if req.approval.action != "approve":
            # The invariant, checked where the submission happens: no approval, nothing sent.
            raise ApplicationError(
                "a submission needs a staff approval", type="NotApproved", non_retryable=True
            )
        try:
            bundle = resources.pas_bundle(req, self._fhir.base_url)
        except resources.IncompleteClaim as exc:
            raise ApplicationError(str(exc), type="IncompleteClaim", non_retryable=True) from None
        try:
            return _outcome(await self.payer.submit(bundle))
        except PayerError as exc:
            raise _payer_error(exc) from None

    @activity.defn(name="pa.inquire_payer")
    async def inquire_payer(self, req: PayerInquiry) -> PayerOutcome:
        try:
            return _outcome(await self.payer.inquire(claim_identifier(req.order_id)))
        except PayerError as exc:
            raise _payer_error(exc) from None

    # -- metrics -----------------------------------------------------------------------------------
    @activity.defn(name="pa.record_metrics")
    async def record_metrics(self, m: MetricsRecord) -> None:
        await pa_store.record_metrics(self._pool, m)


def _payer_error(exc: PayerError) -> ApplicationError:
    # PayerClient messages carry status and issue codes only.
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=isinstance(exc, PayerRejected))


def _outcome(d: PayerDecision) -> PayerOutcome:
    return PayerOutcome(
        outcome=d.outcome,
        claim_response_id=d.claim_response_id,
        preauth_ref=d.preauth_ref,
        disposition=d.disposition,
        at=datetime.now(UTC),
    )


def prior_auth_activities(
    fhir: FhirClient, pool: asyncpg.Pool, notifier: Notifier, settings: Settings
) -> Sequence[Callable[..., Any]]:
    return PriorAuthActivities(fhir, pool, notifier, settings).all()

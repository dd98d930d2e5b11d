"""pa.* activities of the prior-authorization pipeline, built once per worker process.

Reads go through the process's FhirClient (each one audited by it); the workflow's writes are
conditional creates keyed by `step_identifier(workflow id, step)`, so a retried activity or a worker
killed mid-step finds what its first attempt made.  Every resource is validated with fhir.resources
(R4B) before it is sent.  Nothing is submitted to a payer without the staff approval this activity
receives with the request.
"""

from __future__ import annotations

import base64
import difflib
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fhir import application_error, step_identifier
from careflow.config import Settings
from careflow.fhir import codes
from careflow.fhir.client import FhirClient
from careflow.fhir.errors import FhirError
from careflow.fhir.resources import InvalidResource, validate_resource
from careflow.kb import store
from careflow.models.prior_auth import (
    OBSERVATION_CONTEXT,
    PA_MEASUREMENTS,
    PA_REVIEW_ROLES,
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
    PublishDraftRequest,
    ReviewRecords,
    ReviewRoster,
    RosterMember,
)
from careflow.notify.notifier import Notifier
from careflow.payer.client import PayerClient, PayerDecision, PayerError, PayerRejected
from careflow.payer.pas import Code as PasCode
from careflow.payer.pas import build_pas_bundle, claim_identifier

AI_GENERATED_EXTENSION = f"{codes.CAREFLOW}/StructureDefinition/ai-generated"
TASK_CODE_SYSTEM = f"{codes.CAREFLOW}/CodeSystem/task"
ORDER_TYPES = ("MedicationRequest", "ServiceRequest")
CRITERION = re.compile(r"^\s*Criterion\s+(\d+)\s*:", re.IGNORECASE)
GUIDELINE_TYPES = ("guideline", "protocol", "formulary")
# Minimum necessary: of the patient's observations, only the measurements payer criteria name.
_MEASUREMENT_SEARCH = {
    OBSERVATION_CONTEXT: {"code": ",".join(f"{codes.LOINC}|{c}" for c in PA_MEASUREMENTS), "_sort": "-date"}
}


class OrderNotFound(Exception):
    pass


def _ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def _codes(concept: dict[str, Any] | None) -> list[Code]:
    concept = concept or {}
    found = [
        Code(system=c["system"], code=c["code"], display=c.get("display", ""))
        for c in concept.get("coding", [])
        if c.get("system") and c.get("code")
    ]
    return found


def _display(concept: dict[str, Any] | None) -> str:
    """A concept's text (or first display) followed by its codes: the drafter matches on both."""
    concept = concept or {}
    codings = [c for c in concept.get("coding", []) if c.get("code")]
    name = concept.get("text") or next((c["display"] for c in codings if c.get("display")), "")
    coded = ", ".join(str(c["code"]) for c in codings)
    return f"{name} ({coded})" if name and coded else name or coded


def _date(value: Any) -> str:
    return str(value)[:10] if value else "date not recorded"


def summarise(resource: dict[str, Any]) -> str:
    """A minimal, coded one-line summary of an EHR resource: what the drafter needs, nothing more."""
    rt = resource.get("resourceType")
    if rt == "Patient":
        born = str(resource.get("birthDate", ""))[:4] or "unknown"
        return f"Patient: {resource.get('gender', 'unknown')} sex, born {born}."
    if rt == "Condition":
        status = _display(resource.get("clinicalStatus")) or "unknown status"
        onset = _date(resource.get("onsetDateTime"))
        return f"Condition: {_display(resource.get('code'))}; {status}; onset {onset}."
    if rt == "MedicationRequest":
        reasons = "; ".join(_display(r) for r in resource.get("reasonCode", []))
        return (
            f"MedicationRequest: {_display(resource.get('medicationCodeableConcept'))}, "
            f"{resource.get('status', 'unknown')}, authored {_date(resource.get('authoredOn'))}"
            + (f", for {reasons}" if reasons else "")
            + "."
        )
    if rt == "Procedure":
        when = resource.get("performedDateTime") or (resource.get("performedPeriod") or {}).get("start")
        return f"Procedure: {_display(resource.get('code'))}, {resource.get('status', '')}, {_date(when)}."
    if rt == "Encounter":
        kind = (resource.get("class") or {}).get("code", "")
        reasons = "; ".join(_display(r) for r in resource.get("reasonCode", []))
        start = (resource.get("period") or {}).get("start")
        return f"Encounter: {kind} {resource.get('status', '')}, {_date(start)}" + (
            f", for {reasons}." if reasons else "."
        )
    if rt == "Coverage":
        return f"Coverage: {_display(resource.get('type'))}, {resource.get('status', '')}."
    if rt == "Observation":
        return _summarise_measurement(resource)
    return f"{rt}."


def _loinc(resource: dict[str, Any]) -> str | None:
    codings = (resource.get("code") or {}).get("coding", [])
    return next((c.get("code") for c in codings if c.get("system") == codes.LOINC and c.get("code")), None)


def _summarise_measurement(resource: dict[str, Any]) -> str:
    """The value right after the measurement's usual name ("HbA1c 8.1 %"), where the drafter looks."""
    code = _loinc(resource)
    name = PA_MEASUREMENTS.get(code or "") or _display(resource.get("code")) or "Observation"
    quantity = resource.get("valueQuantity") or {}
    value = quantity.get("value")
    shown = (
        f"{value:g} {quantity.get('unit') or quantity.get('code') or ''}".strip()
        if value is not None
        else "no value"
    )
    ranges = resource.get("referenceRange") or [{}]
    low, high = (ranges[0].get("low") or {}).get("value"), (ranges[0].get("high") or {}).get("value")
    reference = f", reference {low:g}-{high:g}" if low is not None and high is not None else ""
    when = _date(resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get("start"))
    status = resource.get("status", "")
    return f"Observation: {name} {shown} (LOINC {code or 'not coded'}{reference}), {status}, {when}."


def latest_measurements(observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The most recent observation of each measured code (the search sorts newest first)."""
    latest: dict[str, dict[str, Any]] = {}
    for obs in observations:
        code = _loinc(obs)
        if code is not None and (obs.get("valueQuantity") or {}).get("value") is not None:
            latest.setdefault(code, obs)
    return list(latest.values())


def criteria_of(text: str) -> list[tuple[int, str]]:
    """`Criterion N:` paragraphs of a payer policy chunk with their numbers, verbatim after the label.

    A criterion runs from its line to the next criterion or blank line (a chunk may join paragraphs
    with a single newline)."""
    out: list[tuple[int, list[str]]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        m = CRITERION.match(line)
        if m:
            current = [line.strip()]
            out.append((int(m.group(1)), current))
        elif not line.strip():
            current = None
        elif current is not None:
            current.append(line.strip())
    # The label is the policy's numbering, not part of the criterion the drafter assesses.
    return [(n, CRITERION.sub("", " ".join(parts), count=1).strip()) for n, parts in out]


def edit_size(draft: str | None, final: str | None) -> int:
    """Characters the reviewer changed (inserted + deleted) between the draft and the approved text."""
    if draft is None or final is None or draft == final:
        return 0
    changed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, draft, final, autojunk=False).get_opcodes():
        if tag != "equal":
            changed += (i2 - i1) + (j2 - j1)
    return changed


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
                    return self._order_info(order_id, found[0])
        except FhirError as exc:
            raise application_error(exc) from None
        raise ApplicationError("no order with this identifier", type="OrderNotFound", non_retryable=True)

    @staticmethod
    def _order_info(order_id: str, order: dict[str, Any]) -> OrderInfo:
        concept = order.get("medicationCodeableConcept") or order.get("code")
        items = _codes(concept)
        if not items:
            raise ApplicationError("the order names no coded item", type="OrderNotCoded", non_retryable=True)
        item = items[0].model_copy(update={"display": items[0].display or _display(concept)})
        diagnoses = [c for r in order.get("reasonCode", []) for c in _codes(r) if c.system == codes.ICD10CM]
        insurance = [i.get("reference") for i in order.get("insurance", []) if i.get("reference")]
        return OrderInfo(
            order_id=order_id,
            reference=_ref(order),
            patient_ref=order["subject"]["reference"],
            item=item,
            diagnoses=diagnoses,
            requester_ref=(order.get("requester") or {}).get("reference"),
            encounter_ref=(order.get("encounter") or {}).get("reference"),
            coverage_ref=insurance[0] if insurance else None,
        )

    @activity.defn(name="pa.read_context")
    async def read_context(self, req: ContextRequest) -> ContextPart:
        """One resource type of the patient's context (the workflow retries each type on its own)."""
        info = activity.info()
        patient_id = req.patient_ref.removeprefix("Patient/")
        try:
            found = await self._fhir.patient_context(
                patient_id,
                [req.resource_type],
                params=_MEASUREMENT_SEARCH,
                request_id=f"{info.workflow_id}/context",
                workflow_id=info.workflow_id,
            )
            resources = found[req.resource_type]
            if req.resource_type == OBSERVATION_CONTEXT:
                resources = latest_measurements(resources)
            part = ContextPart(
                resource_type=req.resource_type,
                entries=[ContextEntry(reference=_ref(r), summary=summarise(r)) for r in resources],
            )
            if req.resource_type == "Coverage":
                active = [r for r in resources if r.get("status") == "active"] or resources
                payors = [p["reference"] for r in active for p in r.get("payor", []) if p.get("reference")]
                if payors:
                    part.payer_ref = payors[0]
                    if payors[0].startswith("Organization/"):
                        # The payer is directory data, not the patient's: its name goes on the claim.
                        org = await self._fhir.read(
                            "Organization",
                            payors[0].removeprefix("Organization/"),
                            workflow_id=info.workflow_id,
                        )
                        part.payer_name = org.get("name")
        except FhirError as exc:
            raise application_error(exc) from None
        return part

    # -- knowledge base ----------------------------------------------------------------------------
    @activity.defn(name="pa.retrieve_evidence")
    async def retrieve_evidence(self, req: EvidenceRequest) -> ClinicalEvidence:
        diagnosis = "; ".join(req.diagnoses)
        out = ClinicalEvidence()
        policies = await store.retrieve(
            self._pool,
            req.tenant_id,
            f"prior authorization coverage criteria for {req.requested_item} {req.item_code}; {diagnosis}",
            k=max(req.k, 10),
            doc_types=["payer_policy"],
        )
        covering = [c for c in policies if _names_item(c.document_title, req.requested_item, req.item_code)]
        if covering:
            policy = covering[0]
            out.policy_document = f"{policy.document_id}@v{policy.version}"
            same = [
                c for c in covering if c.document_id == policy.document_id and c.version == policy.version
            ]
            numbered = dict(sorted({n: t for c in same for n, t in criteria_of(c.text)}.items()))
            out.criteria = list(numbered.values())
            out.evidence += [store.as_evidence(c) for c in same if criteria_of(c.text)]
        if not out.criteria:
            out.missing_information.append(
                f"No payer policy criteria for {req.requested_item} were found in the knowledge base: "
                "the criteria must be checked against the payer's policy by hand."
            )
        guidelines = await store.retrieve(
            self._pool,
            req.tenant_id,
            f"{req.requested_item} for {diagnosis}: indications and evidence",
            k=req.k,
            doc_types=list(GUIDELINE_TYPES),
        )
        out.evidence += [store.as_evidence(c) for c in guidelines]
        if not guidelines:
            out.missing_information.append(
                f"No clinical guideline on {req.requested_item} in the knowledge base."
            )
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
                    ref = (r.get("practitioner") or {}).get("reference", "")
                    if ref.startswith("Practitioner/"):
                        members.append(RosterMember(practitioner_ref=ref, role_ref=_ref(r), role=role))
        except FhirError as exc:
            raise application_error(exc) from None
        members.sort(key=lambda m: (m.role, m.practitioner_ref))
        return ReviewRoster(members=members)

    def _document(self, req: PublishDraftRequest) -> dict[str, Any]:
        d, order = req.draft, req.order
        table = "\n".join(
            ["| Payer criterion | Status | Evidence |", "|---|---|---|"]
            + [f"| {c.criterion} | {c.status} | {', '.join(c.evidence_ids)} |" for c in d.criteria]
        )
        missing = "\n".join(f"- {m}" for m in d.missing_information) or "- none"
        body = f"{d.letter}\n\n## Payer criteria\n\n{table}\n\n## Missing information\n\n{missing}\n"
        doc: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "status": "current",
            "docStatus": "preliminary",
            "type": {"text": "Prior authorization justification"},
            "subject": {"reference": order.patient_ref},
            "date": datetime.now(UTC).isoformat(),
            "description": f"Prior authorization draft for order {order.order_id} (revision {d.revision})",
            "extension": [
                {
                    "url": AI_GENERATED_EXTENSION,
                    "extension": [
                        {"url": "model", "valueString": d.model or "unknown"},
                        {"url": "version", "valueString": d.model_version or "unknown"},
                        {"url": "template", "valueBoolean": d.template},
                        {"url": "revision", "valueInteger": d.revision},
                    ],
                }
            ],
            "content": [
                {
                    "attachment": {
                        "contentType": "text/markdown; charset=utf-8",
                        "data": base64.b64encode(body.encode()).decode(),
                        "title": "Prior authorization justification (draft)",
                    }
                }
            ],
            "context": {"related": [{"reference": order.reference}]},
        }
        if order.encounter_ref:
            doc["context"]["encounter"] = [{"reference": order.encounter_ref}]
        return _validated(doc)

    @staticmethod
    def _task(
        order: OrderInfo, code: str, description: str, role: str, owner: RosterMember | None, expedited: bool,
        inputs: list[tuple[str, str]],
    ) -> dict[str, Any]:  # fmt: skip
        """A work item for a PA role: `inputs` are (name, reference) pairs, e.g. the draft to review."""
        task: dict[str, Any] = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "priority": "asap" if expedited else "routine",
            "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": code, "display": description}]},
            "description": description,
            "focus": {"reference": order.reference},
            "for": {"reference": order.patient_ref},
            "authoredOn": datetime.now(UTC).isoformat(),
            "performerType": [
                {"coding": [{"system": codes.ROLE_SYSTEM, "code": role, "display": codes.ROLES[role]}]}
            ],
            "input": [
                *({"type": {"text": name}, "valueReference": {"reference": ref}} for name, ref in inputs),
                {"type": {"text": "order-id"}, "valueString": order.order_id},
            ],
        }
        if owner is not None:
            task["owner"] = {"reference": owner.role_ref}
        return _validated(task)

    @activity.defn(name="pa.publish_draft")
    async def publish_draft(self, req: PublishDraftRequest) -> ReviewRecords:
        """The draft as a preliminary DocumentReference and the review Task (first revision), or the
        DocumentReference's next version (later revisions); both conditional on workflow-step ids."""
        wid = _workflow_id()
        doc = self._document(req)
        try:
            if req.document_reference_id is None:
                created, _ = await self._fhir.conditional_create(
                    doc, step_identifier(wid, "draft-document"), workflow_id=wid
                )
            else:
                current = await self._fhir.read(
                    "DocumentReference", req.document_reference_id, workflow_id=wid
                )
                created = await self._fhir.update(
                    {**doc, "id": current["id"], "identifier": current.get("identifier", [])}, workflow_id=wid
                )
            task = self._task(
                req.order, "review-pa-draft", "Review prior authorization draft", "pa-staff", req.assignee,
                req.priority == "expedited", [("draft", f"DocumentReference/{created['id']}")],
            )  # fmt: skip
            made, _ = await self._fhir.conditional_create(
                task, step_identifier(wid, "review-task"), workflow_id=wid
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
        task = self._task(
            req.order, "escalated-pa-review", description, "pa-supervisor", req.supervisor, True,
            [("review-task", overdue)],
        )  # fmt: skip
        task["partOf"] = [{"reference": overdue}]
        try:
            made, _ = await self._fhir.conditional_create(
                _validated(task), step_identifier(wid, "escalation-task"), workflow_id=wid
            )
        except FhirError as exc:
            raise application_error(exc) from None
        return str(made["id"])

    @activity.defn(name="pa.notify")
    async def notify(self, req: NotifyRequest) -> bool:
        wid = activity.info().workflow_id
        sent = await self._notifier.send(
            dedup_key=f"{wid}:{req.step}",
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
                doc = {k: v for k, v in doc.items() if k != "meta"}
                doc["docStatus"] = "final"
                doc["content"] = [
                    {
                        "attachment": {
                            "contentType": "text/plain; charset=utf-8",
                            "data": base64.b64encode(req.final_letter.encode()).decode(),
                            "title": "Prior authorization justification (approved)",
                        }
                    }
                ]
                if req.reviewer_ref:
                    doc["authenticator"] = {"reference": req.reviewer_ref}
                await self._fhir.update(_validated(doc), workflow_id=wid)
            for task_id in req.task_ids:
                task = await self._fhir.read("Task", task_id, workflow_id=wid)
                task = {k: v for k, v in task.items() if k != "meta"}
                if task.get("status") in ("completed", "cancelled"):
                    continue  # a retry after this Task was closed
                task["lastModified"] = datetime.now(UTC).isoformat()
                if req.outcome == "approved":
                    task["status"] = "completed"
                    if req.reviewer_ref:
                        task["owner"] = {"reference": req.reviewer_ref}
                else:
                    task["status"] = "cancelled"
                    task["statusReason"] = {
                        "text": "payer decision deadline passed"
                        if req.outcome == "expired"
                        else "prior authorization draft rejected by reviewer"
                    }
                await self._fhir.update(_validated(task), workflow_id=wid)
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
        order = req.order
        if not (req.payer_ref and order.coverage_ref and order.requester_ref):
            raise ApplicationError(
                "the order lacks coverage, payer or requester references",
                type="IncompleteClaim",
                non_retryable=True,
            )
        counts = {s: sum(1 for c in req.criteria if c.status == s) for s in ("met", "not_met", "unknown")}
        bundle = build_pas_bundle(
            order_id=order.order_id,
            patient_ref=order.patient_ref,
            coverage_ref=order.coverage_ref,
            payer_ref=req.payer_ref,
            requester_ref=order.requester_ref,
            enterer_ref=req.approval.reviewer_ref,
            item=PasCode(order.item.system, order.item.code, order.item.display),
            diagnoses=[PasCode(d.system, d.code, d.display) for d in order.diagnoses],
            document_reference_id=req.document_reference_id,
            letter_text=req.letter,
            priority=req.priority.value,
            created=req.approval.at,
            ehr_base_url=self._fhir.base_url,
            payer_name=req.payer_name,
            criteria_met=counts["met"],
            criteria_not_met=counts["not_met"],
            criteria_unknown=counts["unknown"],
        )
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
        to_draft = (m.draft_ready_at - m.started_at).total_seconds() if m.draft_ready_at else None
        in_review = (
            (m.decided_at - m.draft_ready_at).total_seconds() if m.decided_at and m.draft_ready_at else None
        )
        await self._pool.execute(
            """INSERT INTO pa_metrics (workflow_id, tenant_id, order_id, item_code, payer, priority,
                   started_at, draft_ready_at, decided_at, seconds_to_draft, seconds_in_review,
                   edit_chars, revisions, template_used, outcome)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
               ON CONFLICT (workflow_id) DO UPDATE SET
                   payer = EXCLUDED.payer, draft_ready_at = EXCLUDED.draft_ready_at,
                   decided_at = EXCLUDED.decided_at, seconds_to_draft = EXCLUDED.seconds_to_draft,
                   seconds_in_review = EXCLUDED.seconds_in_review, edit_chars = EXCLUDED.edit_chars,
                   revisions = EXCLUDED.revisions, template_used = EXCLUDED.template_used,
                   outcome = EXCLUDED.outcome, updated_at = now()""",
            m.workflow_id,
            m.tenant_id,
            m.order_id,
            m.item_code,
            m.payer,
            m.priority.value,
            m.started_at,
            m.draft_ready_at,
            m.decided_at,
            to_draft,
            in_review,
            edit_size(m.draft_letter, m.final_letter) if m.final_letter is not None else None,
            m.revisions,
            m.template_used,
            m.outcome,
        )


def _names_item(title: str, requested_item: str, item_code: str) -> bool:
    """A payer policy covers the order's item when its title names the item or its code."""
    low = title.lower()
    name = requested_item.split(" (", 1)[0].lower()
    return item_code.lower() in low or (bool(name) and name in low)


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

"""The FHIR resources the prior-auth pipeline writes, as plain R4 dicts: the draft's DocumentReference
(marked AI-generated), the Tasks of the PA roles, their closing states, and the PAS Claim Bundle.

Builders take plain values (the clock included) and return dicts; the activities validate and send
them.  References are EHR references from the order (`MedicationRequest/<id>`, `Patient/<id>`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from careflow.fhir import codes
from careflow.models.prior_auth import Draft, OrderInfo, PayerSubmission, RosterMember
from careflow.payer.pas import Code as PasCode
from careflow.payer.pas import build_pas_bundle
from careflow.prior_auth.letters import document_body
from careflow.prior_auth.metrics import criteria_counts

AI_GENERATED_EXTENSION = f"{codes.CAREFLOW}/StructureDefinition/ai-generated"
TASK_CODE_SYSTEM = f"{codes.CAREFLOW}/CodeSystem/task"
CLOSED_TASK = ("completed", "cancelled")
CANCEL_REASON = {
    "expired": "payer decision deadline passed",
    "rejected": "prior authorization draft rejected by reviewer",
}


class IncompleteClaim(ValueError):
    """The order lacks what a PAS Claim must name (coverage, payer, requester)."""


def _attachment(content_type: str, text: str, title: str) -> dict[str, Any]:
    data = base64.b64encode(text.encode()).decode()
    return {"attachment": {"contentType": content_type, "data": data, "title": title}}


def draft_document(order: OrderInfo, draft: Draft, now: datetime) -> dict[str, Any]:
    """The draft as a preliminary DocumentReference on the patient, related to the order."""
    d = draft
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "preliminary",
        "type": {"text": "Prior authorization justification"},
        "subject": {"reference": order.patient_ref},
        "date": now.isoformat(),
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
            _attachment(
                "text/markdown; charset=utf-8",
                document_body(d),
                "Prior authorization justification (draft)",
            )
        ],
        "context": {"related": [{"reference": order.reference}]},
    }
    if order.encounter_ref:
        doc["context"]["encounter"] = [{"reference": order.encounter_ref}]
    return doc


def revised_document(doc: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A later revision replaces the stored DocumentReference in place: its id and identifiers stay."""
    return {**doc, "id": current["id"], "identifier": current.get("identifier", [])}


def approved_document(current: dict[str, Any], letter: str, reviewer_ref: str | None) -> dict[str, Any]:
    """The stored draft made final: the approved text replaces the draft, the reviewer authenticates."""
    doc = {k: v for k, v in current.items() if k != "meta"}
    doc["docStatus"] = "final"
    doc["content"] = [
        _attachment("text/plain; charset=utf-8", letter, "Prior authorization justification (approved)")
    ]
    if reviewer_ref:
        doc["authenticator"] = {"reference": reviewer_ref}
    return doc


def task(
    order: OrderInfo,
    code: str,
    description: str,
    role: str,
    owner: RosterMember | None,
    expedited: bool,
    inputs: Sequence[tuple[str, str]],
    now: datetime,
    part_of: str | None = None,
) -> dict[str, Any]:
    """A work item for a PA role on the order: `inputs` are (name, reference) pairs, e.g. the draft to
    review; `part_of` the Task this one continues (an escalation points at the overdue review)."""
    made: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "asap" if expedited else "routine",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": code, "display": description}]},
        "description": description,
        "focus": {"reference": order.reference},
        "for": {"reference": order.patient_ref},
        "authoredOn": now.isoformat(),
        "performerType": [
            {"coding": [{"system": codes.ROLE_SYSTEM, "code": role, "display": codes.ROLES[role]}]}
        ],
        "input": [
            *({"type": {"text": name}, "valueReference": {"reference": ref}} for name, ref in inputs),
            {"type": {"text": "order-id"}, "valueString": order.order_id},
        ],
    }
    if owner is not None:
        made["owner"] = {"reference": owner.role_ref}
    if part_of is not None:
        made["partOf"] = [{"reference": part_of}]
    return made


def closed_task(
    current: dict[str, Any],
    outcome: Literal["approved", "rejected", "expired"],
    reviewer_ref: str | None,
    now: datetime,
) -> dict[str, Any] | None:
    """The Task completed (approved, owned by the reviewer) or cancelled with its reason; None when it
    is closed already (a retry after it was written)."""
    closed = {k: v for k, v in current.items() if k != "meta"}
    if closed.get("status") in CLOSED_TASK:
        return None
    closed["lastModified"] = now.isoformat()
    if outcome == "approved":
        closed["status"] = "completed"
        if reviewer_ref:
            closed["owner"] = {"reference": reviewer_ref}
    else:
        closed["status"] = "cancelled"
        closed["statusReason"] = {"text": CANCEL_REASON[outcome]}
    return closed


def pas_bundle(req: PayerSubmission, ehr_base_url: str) -> dict[str, Any]:
    """The PAS request Bundle of an approved submission; IncompleteClaim when the order lacks the
    coverage, payer or requester a Claim names."""
    order = req.order
    if not (req.payer_ref and order.coverage_ref and order.requester_ref):
        raise IncompleteClaim("the order lacks coverage, payer or requester references")
    counts = criteria_counts(req.criteria)
    return build_pas_bundle(
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
        priority=req.priority,
        created=req.approval.at,
        ehr_base_url=ehr_base_url,
        payer_name=req.payer_name,
        criteria_met=counts["met"],
        criteria_not_met=counts["not_met"],
        criteria_unknown=counts["unknown"],
    )

"""Da Vinci PAS-shaped prior-authorization requests: a collection Bundle whose first entry is a Claim
(use `preauthorization`) followed by the resources it references.

Only what careflow's workflow holds goes in: ids and references from the EHR, codes, the approved
letter and its DocumentReference.  Referenced resources the workflow did not fetch are minimal stubs
(id only, or the few elements R4 requires), which is what a payer resolves against its own records.
Every resource is checked with fhir.resources R4B before the Bundle is returned.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from careflow.fhir import codes
from careflow.fhir.outcome import Issue
from careflow.fhir.resources import InvalidResource, validate_resource
from careflow.models.prior_auth import Priority

CLAIM_ID_SYSTEM = f"{codes.CAREFLOW}/sid/pa-claim"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PROCESS_PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
PAS_SUPPORTING_INFO = "http://hl7.org/us/davinci-pas/CodeSystem/PASSupportingInfoType"
CAREFLOW_SUPPORTING_INFO = f"{codes.CAREFLOW}/CodeSystem/pa-supporting-info"
CRITERIA_SUMMARY = "criteria-summary"  # "met=3 not_met=0 unknown=0": what the reviewer approved
PAS_CLAIM_PROFILE = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-claim"
PAS_BUNDLE_PROFILE = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-pas-request-bundle"


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str = ""

    def concept(self) -> dict[str, Any]:
        coding = {"system": self.system, "code": self.code}
        if self.display:
            coding["display"] = self.display
        return {"coding": [coding]}


def claim_identifier(order_id: str) -> str:
    """One claim per order: resubmitting the same order is the same claim (the payer deduplicates)."""
    return f"pa-{order_id}"


def _id_of(reference: str, rtype: str) -> str:
    kind, _, rid = reference.partition("/")
    if kind != rtype or not rid:
        raise ValueError(f"expected a {rtype}/<id> reference")
    return rid


def _stable_id(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def build_pas_bundle(
    *,
    order_id: str,
    patient_ref: str,
    coverage_ref: str,
    payer_ref: str,
    requester_ref: str,
    item: Code,
    diagnoses: Sequence[Code],
    document_reference_id: str,
    letter_text: str,
    priority: Priority = Priority.STANDARD,
    created: datetime,
    ehr_base_url: str,
    enterer_ref: str | None = None,
    payer_name: str | None = None,
    criteria_met: int | None = None,
    criteria_not_met: int = 0,
    criteria_unknown: int = 0,
    patient: Mapping[str, Any] | None = None,
    coverage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The PAS request Bundle for one approved prior-authorization draft.

    References are EHR references (`Patient/<id>`, `Coverage/<id>`, `Organization/<id>`,
    `Practitioner/<id>`); entries get full URLs on `ehr_base_url` so they resolve inside the Bundle.
    `patient` / `coverage` are the EHR's resources when the caller has them, else stubs are sent.
    `criteria_*` summarise the payer criteria the approved draft marks met / not met / unknown.
    """
    base = ehr_base_url.rstrip("/")
    claim_value = claim_identifier(order_id)
    claim_id = _stable_id("claim", claim_value)
    enterer = enterer_ref or requester_ref
    created_at = created.replace(microsecond=0).isoformat()

    supporting: list[dict[str, Any]] = [
        {
            "sequence": 1,
            "category": Code(PAS_SUPPORTING_INFO, "additionalInformation").concept(),
            "valueReference": {"reference": f"DocumentReference/{document_reference_id}"},
        },
        {
            "sequence": 2,
            "category": Code(PAS_SUPPORTING_INFO, "freeFormMessage").concept(),
            "valueString": letter_text,
        },
    ]
    if criteria_met is not None:
        supporting.append(
            {
                "sequence": 3,
                "category": Code(CAREFLOW_SUPPORTING_INFO, CRITERIA_SUMMARY).concept(),
                "valueString": f"met={criteria_met} not_met={criteria_not_met} unknown={criteria_unknown}",
            }
        )
    pharmacy = item.system == codes.RXNORM
    claim: dict[str, Any] = {
        "resourceType": "Claim",
        "id": claim_id,
        "meta": {"profile": [PAS_CLAIM_PROFILE]},
        "identifier": [{"system": CLAIM_ID_SYSTEM, "value": claim_value}],
        "status": "active",
        "type": Code(CLAIM_TYPE, "pharmacy" if pharmacy else "professional").concept(),
        "use": "preauthorization",
        "patient": {"reference": patient_ref},
        "created": created_at,
        "insurer": {"reference": payer_ref},
        "provider": {"reference": requester_ref},
        "enterer": {"reference": enterer},
        "priority": Code(PROCESS_PRIORITY, "stat" if priority == Priority.EXPEDITED else "normal").concept(),
        "diagnosis": [
            {"sequence": i, "diagnosisCodeableConcept": d.concept()} for i, d in enumerate(diagnoses, 1)
        ],
        "supportingInfo": supporting,
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": coverage_ref}}],
        "item": [
            {
                "sequence": 1,
                "productOrService": item.concept(),
                "diagnosisSequence": list(range(1, len(diagnoses) + 1)),
                "informationSequence": [s["sequence"] for s in supporting],
                "quantity": {"value": 1},
            }
        ],
    }
    patient_res = dict(patient) if patient else {"resourceType": "Patient"}
    patient_res["id"] = _id_of(patient_ref, "Patient")
    coverage_res = (
        dict(coverage)
        if coverage
        else {
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": {"reference": patient_ref},
            "payor": [{"reference": payer_ref}],
        }
    )
    coverage_res["id"] = _id_of(coverage_ref, "Coverage")
    payer_res: dict[str, Any] = {"resourceType": "Organization", "id": _id_of(payer_ref, "Organization")}
    if payer_name:
        payer_res["name"] = payer_name
    requester_type = requester_ref.partition("/")[0]
    people = {requester_ref: {"resourceType": requester_type, "id": requester_ref.partition("/")[2]}}
    if enterer not in people:
        people[enterer] = {"resourceType": enterer.partition("/")[0], "id": enterer.partition("/")[2]}
    document = {
        "resourceType": "DocumentReference",
        "id": document_reference_id,
        "status": "current",
        "docStatus": "final",
        "subject": {"reference": patient_ref},
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(letter_text.encode()).decode(),
                    "title": "Prior authorization justification",
                }
            }
        ],
    }
    resources = [claim, patient_res, coverage_res, payer_res, *people.values(), document]
    bundle = {
        "resourceType": "Bundle",
        "id": _stable_id("bundle", claim_value),
        "meta": {"profile": [PAS_BUNDLE_PROFILE]},
        "identifier": {"system": CLAIM_ID_SYSTEM, "value": claim_value},
        "type": "collection",
        "timestamp": created_at,
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources],
    }
    validate_pas_bundle(bundle)
    return bundle


def validate_pas_bundle(bundle: Any) -> dict[str, Any]:
    """R4B-valid collection Bundle whose first entry is a preauthorization Claim with an identifier;
    returns the Claim.  Raises InvalidResource saying where (FHIRPath), never echoing values."""
    validate_resource(bundle, expected_type="Bundle")
    if bundle.get("type") != "collection":
        raise InvalidResource([Issue("invalid", "a PAS request is a collection Bundle", ("Bundle.type",))])
    entries = bundle.get("entry") or []
    # R4B's Bundle model does not descend into entry resources: check each one against its own model.
    issues: list[Issue] = []
    for i, entry in enumerate(entries):
        try:
            validate_resource(entry.get("resource"), where=f"Bundle.entry[{i}].resource")
        except InvalidResource as exc:
            issues += exc.issues
    if issues:
        raise InvalidResource(issues)
    claim = entries[0].get("resource") if entries else None
    if not isinstance(claim, dict) or claim.get("resourceType") != "Claim":
        raise InvalidResource([Issue("required", "the first entry must be a Claim", ("Bundle.entry[0]",))])
    if claim.get("use") != "preauthorization":
        raise InvalidResource(
            [Issue("value", "Claim.use must be preauthorization", ("Bundle.entry[0].resource.use",))]
        )
    if not any(i.get("system") and i.get("value") for i in claim.get("identifier") or []):
        raise InvalidResource(
            [Issue("required", "the Claim needs an identifier", ("Bundle.entry[0].resource.identifier",))]
        )
    if not claim.get("item"):
        raise InvalidResource(
            [Issue("required", "the Claim needs an item", ("Bundle.entry[0].resource.item",))]
        )
    return claim

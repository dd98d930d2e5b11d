"""The patient's record as the drafter sees it: minimal, coded one-line summaries of FHIR resources.

Minimum necessary: of the patient's observations only the latest value of each measurement payer
criteria name is kept, and a summary carries codes, statuses and dates, never free text beyond a
concept's name.
"""

from __future__ import annotations

from typing import Any

from careflow.fhir import codes
from careflow.models.prior_auth import OBSERVATION_CONTEXT, PA_MEASUREMENTS, Code, ContextPart, OrderInfo

ORDER_TYPES = ("MedicationRequest", "ServiceRequest")
# Of the patient's observations, only the measurements payer criteria name (newest first).
MEASUREMENT_SEARCH = {
    OBSERVATION_CONTEXT: {"code": ",".join(f"{codes.LOINC}|{c}" for c in PA_MEASUREMENTS), "_sort": "-date"}
}


class OrderNotCoded(ValueError):
    """The order names no coded drug or service: there is nothing to authorize."""


def ref(resource: dict[str, Any]) -> str:
    """`ResourceType/id`."""
    return f"{resource['resourceType']}/{resource['id']}"


def coded(concept: dict[str, Any] | None) -> list[Code]:
    """A CodeableConcept's codings that have both a system and a code."""
    concept = concept or {}
    return [
        Code(system=c["system"], code=c["code"], display=c.get("display", ""))
        for c in concept.get("coding", [])
        if c.get("system") and c.get("code")
    ]


def display(concept: dict[str, Any] | None) -> str:
    """A concept's text (or first display) followed by its codes: the drafter matches on both."""
    concept = concept or {}
    codings = [c for c in concept.get("coding", []) if c.get("code")]
    name = concept.get("text") or next((c["display"] for c in codings if c.get("display")), "")
    listed = ", ".join(str(c["code"]) for c in codings)
    return f"{name} ({listed})" if name and listed else name or listed


def day(value: Any) -> str:
    """The date part of a FHIR date or dateTime."""
    return str(value)[:10] if value else "date not recorded"


def loinc(resource: dict[str, Any]) -> str | None:
    """The resource's first LOINC code, if any."""
    codings = (resource.get("code") or {}).get("coding", [])
    return next((c.get("code") for c in codings if c.get("system") == codes.LOINC and c.get("code")), None)


def summarise(resource: dict[str, Any]) -> str:
    """A minimal, coded one-line summary of an EHR resource: what the drafter needs, nothing more."""
    rt = resource.get("resourceType")
    if rt == "Patient":
        born = str(resource.get("birthDate", ""))[:4] or "unknown"
        return f"Patient: {resource.get('gender', 'unknown')} sex, born {born}."
    if rt == "Condition":
        status = display(resource.get("clinicalStatus")) or "unknown status"
        onset = day(resource.get("onsetDateTime"))
        return f"Condition: {display(resource.get('code'))}; {status}; onset {onset}."
    if rt == "MedicationRequest":
        reasons = "; ".join(display(r) for r in resource.get("reasonCode", []))
        return (
            f"MedicationRequest: {display(resource.get('medicationCodeableConcept'))}, "
            f"{resource.get('status', 'unknown')}, authored {day(resource.get('authoredOn'))}"
            + (f", for {reasons}" if reasons else "")
            + "."
        )
    if rt == "Procedure":
        when = resource.get("performedDateTime") or (resource.get("performedPeriod") or {}).get("start")
        return f"Procedure: {display(resource.get('code'))}, {resource.get('status', '')}, {day(when)}."
    if rt == "Encounter":
        kind = (resource.get("class") or {}).get("code", "")
        reasons = "; ".join(display(r) for r in resource.get("reasonCode", []))
        start = (resource.get("period") or {}).get("start")
        return f"Encounter: {kind} {resource.get('status', '')}, {day(start)}" + (
            f", for {reasons}." if reasons else "."
        )
    if rt == "Coverage":
        return f"Coverage: {display(resource.get('type'))}, {resource.get('status', '')}."
    if rt == "Observation":
        return summarise_measurement(resource)
    return f"{rt}."


def summarise_measurement(resource: dict[str, Any]) -> str:
    """The value right after the measurement's usual name ("HbA1c 8.1 %"), where the drafter looks."""
    code = loinc(resource)
    name = PA_MEASUREMENTS.get(code or "") or display(resource.get("code")) or "Observation"
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
    when = day(resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get("start"))
    status = resource.get("status", "")
    return f"Observation: {name} {shown} (LOINC {code or 'not coded'}{reference}), {status}, {when}."


def latest_measurements(observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The most recent observation of each measured code (the search sorts newest first)."""
    latest: dict[str, dict[str, Any]] = {}
    for obs in observations:
        code = loinc(obs)
        if code is not None and (obs.get("valueQuantity") or {}).get("value") is not None:
            latest.setdefault(code, obs)
    return list(latest.values())


def order_info(order_id: str, order: dict[str, Any]) -> OrderInfo:
    """The order (MedicationRequest or ServiceRequest) as references and codes; OrderNotCoded when it
    names no coded item."""
    concept = order.get("medicationCodeableConcept") or order.get("code")
    items = coded(concept)
    if not items:
        raise OrderNotCoded("the order names no coded item")
    item = items[0].model_copy(update={"display": items[0].display or display(concept)})
    diagnoses = [c for r in order.get("reasonCode", []) for c in coded(r) if c.system == codes.ICD10CM]
    insurance = [i.get("reference") for i in order.get("insurance", []) if i.get("reference")]
    return OrderInfo(
        order_id=order_id,
        reference=ref(order),
        patient_ref=order["subject"]["reference"],
        item=item,
        diagnoses=diagnoses,
        requester_ref=(order.get("requester") or {}).get("reference"),
        encounter_ref=(order.get("encounter") or {}).get("reference"),
        coverage_ref=insurance[0] if insurance else None,
    )


def payer_refs(coverages: list[dict[str, Any]]) -> list[str]:
    """The payers of the patient's coverage, those of active coverage when there is any."""
    active = [r for r in coverages if r.get("status") == "active"] or coverages
    return [p["reference"] for r in active for p in r.get("payor", []) if p.get("reference")]


def coverage_payer(context: list[ContextPart]) -> tuple[str | None, str | None]:
    """The payer (reference, name) the Coverage part of the context found; None where it found none."""
    coverage = next((p for p in context if p.resource_type == "Coverage"), None)
    return (coverage.payer_ref, coverage.payer_name or None) if coverage else (None, None)

"""What an ambient note is written from beside the transcript, read from the EHR's resources: who may
sign (the badge owner, else the encounter's attender), the patient's ICD-10-CM coded conditions (the
evidence code suggestions cite) and medicines, and the vocabulary speech to text should prefer."""

from __future__ import annotations

from typing import Any

from careflow.fhir import codes as c
from careflow.models.ambient import CodedCondition, EncounterContext


class NoPhysician(ValueError):
    pass


def _id(ref: object, rtype: str) -> str:
    return str(ref or "").removeprefix(f"{rtype}/")


def patient_of(encounter: dict[str, Any]) -> str:
    return _id((encounter.get("subject") or {}).get("reference"), "Patient")


def encounter_context(
    encounter: dict[str, Any],
    conditions: list[dict[str, Any]],
    medication_requests: list[dict[str, Any]],
    physician_id: str | None,
) -> EncounterContext:
    attender = next(
        (_id(p["individual"]["reference"], "Practitioner") for p in encounter.get("participant") or []
         if (p.get("individual") or {}).get("reference")),
        None,
    )  # fmt: skip
    physician = physician_id or attender
    if not physician:
        raise NoPhysician(f"Encounter {encounter.get('id')} names no practitioner to sign the note")
    coded = [
        CodedCondition(id=f"Condition/{r['id']}", code=coding["code"], display=coding.get("display", ""))
        for r in conditions
        for coding in (r.get("code") or {}).get("coding") or []
        if coding.get("system") == c.ICD10CM
    ]
    medicines = []
    for r in medication_requests:
        concept = r.get("medicationCodeableConcept") or {}
        name = concept.get("text") or next((x.get("display") for x in concept.get("coding") or []), None)
        if name:
            medicines.append(str(name))
    return EncounterContext(
        encounter_id=str(encounter["id"]),
        patient_id=patient_of(encounter),
        physician_id=physician,
        conditions=coded,
        medications=medicines,
        vocabulary=list(dict.fromkeys([x.display for x in coded if x.display] + medicines)),
    )

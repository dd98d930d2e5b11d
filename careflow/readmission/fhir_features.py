"""A discharge's features from the patient's FHIR resources (minimum necessary: codes, dates, values).

`discharge_features` takes what the activity read: the discharge Encounter, the Patient, and the
patient's Conditions, Encounters, lab Observations and MedicationRequests.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from careflow.fhir import codes as c
from careflow.readmission import charlson
from careflow.readmission.features import DischargeFeatures, Disposition

Resource = dict[str, Any]
LABS = {"hemoglobin": "718-7", "sodium": "2951-2", "creatinine": "2160-0"}
INPATIENT = ("IMP", "ACUTE", "NONAC")
EMERGENT_SOURCES = {"emd"}  # admit-source: from the emergency department
EMERGENT_PRIORITY = {"EM", "UR"}  # v3 ActPriority: emergency, urgent


class NotADischarge(ValueError):
    """The Encounter is not a finished inpatient stay with a period end: nothing to score."""


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _codes(concept: Resource | None, system: str | None = None) -> list[str]:
    return [
        str(cd["code"]) for cd in (concept or {}).get("coding", [])
        if cd.get("code") and (system is None or cd.get("system") == system)
    ]  # fmt: skip


def stay(encounter: Resource) -> tuple[datetime, datetime]:
    """Admission and discharge times of a finished inpatient Encounter."""
    period = encounter.get("period") or {}
    start, end = _when(period.get("start")), _when(period.get("end"))
    inpatient = (encounter.get("class") or {}).get("code") in INPATIENT
    if encounter.get("status") != "finished" or not inpatient or start is None or end is None:
        raise NotADischarge("the Encounter is not a finished inpatient stay with start and end")
    return start, end


def stay_end(encounter: Resource) -> datetime | None:
    """When a finished inpatient Encounter ended (None for anything else)."""
    try:
        return stay(encounter)[1]
    except NotADischarge:
        return None


def readmitted_within(
    encounter_id: str, discharged_at: datetime, encounters: Sequence[Resource], days: int = 30
) -> bool:
    """The outcome the model predicts: another inpatient stay of the patient starting within `days`
    of this discharge."""
    until = discharged_at + timedelta(days=days)
    for e in encounters:
        start = _when(_field(e, "period.start"))
        inpatient = (e.get("class") or {}).get("code") in INPATIENT
        if e.get("id") != encounter_id and inpatient and start is not None and discharged_at < start <= until:
            return True
    return False


def _age(birth: str | None, at: datetime) -> float:
    if not birth:
        raise NotADischarge("the Patient has no birthDate")
    born = date.fromisoformat(birth[:10])
    d = at.date()
    return float(d.year - born.year - ((d.month, d.day) < (born.month, born.day)))


def _before(resources: Iterable[Resource], end: datetime, *fields: str) -> list[Resource]:
    out = []
    for r in resources:
        when = next((w for f in fields if (w := _when(_field(r, f))) is not None), None)
        if when is None or when <= end:
            out.append(r)
    return out


def _field(r: Resource, path: str) -> str | None:
    value: Any = r
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


def _visits(encounters: Sequence[Resource], classes: set[str], since: datetime, until: datetime) -> int:
    count = 0
    for e in encounters:
        start = _when(_field(e, "period.start"))
        if (e.get("class") or {}).get("code") in classes and start is not None and since <= start < until:
            count += 1
    return count


def _last_lab(observations: Sequence[Resource], loinc: str, start: datetime, end: datetime) -> float | None:
    """The last value of the lab taken during the stay."""
    best: tuple[datetime, float] | None = None
    for o in observations:
        if loinc not in _codes(o.get("code"), c.LOINC):
            continue
        when = _when(o.get("effectiveDateTime") or _field(o, "effectivePeriod.start"))
        value = (o.get("valueQuantity") or {}).get("value")
        if when is None or value is None or not (start <= when <= end):
            continue
        if best is None or when > best[0]:
            best = (when, float(value))
    return None if best is None else best[1]


def discharge_features(
    encounter: Resource,
    patient: Resource,
    conditions: Sequence[Resource],
    encounters: Sequence[Resource],
    observations: Sequence[Resource],
    medications: Sequence[Resource],
) -> DischargeFeatures:
    start, end = stay(encounter)
    diagnoses = [
        code
        for cond in _before(conditions, end, "onsetDateTime", "recordedDate")
        if "entered-in-error" not in _codes(cond.get("verificationStatus"))
        for code in _codes(cond.get("code"), c.ICD10CM)
    ]
    hospitalization = encounter.get("hospitalization") or {}
    emergent = bool(
        EMERGENT_SOURCES & set(_codes(hospitalization.get("admitSource")))
        or EMERGENT_PRIORITY & set(_codes(encounter.get("priority")))
    )
    others = [e for e in encounters if e.get("id") != encounter.get("id")]
    active_meds = [
        m for m in _before(medications, end, "authoredOn")
        if m.get("status") in ("active", "on-hold") and m.get("intent") in ("order", "plan", "original-order")
    ]  # fmt: skip
    return DischargeFeatures(
        age=_age(patient.get("birthDate"), end),
        charlson=charlson.index(diagnoses),
        los_days=float((end.date() - start.date()).days),
        emergent=emergent,
        admissions_12m=_visits(others, set(INPATIENT), start - timedelta(days=365), start),
        ed_visits_6m=_visits(others, {"EMER"}, start - timedelta(days=183), start),
        disposition=Disposition.of(next(iter(_codes(hospitalization.get("dischargeDisposition"))), None)),
        hemoglobin=_last_lab(observations, LABS["hemoglobin"], start, end),
        sodium=_last_lab(observations, LABS["sodium"], start, end),
        creatinine=_last_lab(observations, LABS["creatinine"], start, end),
        active_medications=len(active_meds),
    )

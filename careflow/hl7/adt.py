"""ADT^A03 (discharge/end visit, HL7 v2.3 - v2.5.1) to a discharge event, after the envelope checks
every message gets (careflow/hl7/message.py).

What careflow takes from it, ids and codes only: the patient's identifier (PID-3), the visit number
(PV1-19: the encounter the discharge ends, the readmission workflow's key), the patient class
(PV1-2, inpatient expected), the discharge disposition (PV1-36, HL7 table 0112) and the discharge
time (PV1-45, else EVN-6, else EVN-2).  AE when the patient id, the visit number or the discharge
time is missing, or when PV1-2 says the visit was not inpatient.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from careflow.hl7.message import (
    REQUIRED_FIELD_MISSING,
    MessageHeader,
    Unprocessable,
    component,
    envelope,
    field,
    hl7_timestamp,
)

INPATIENT_CLASSES = {"I"}  # HL7 table 0004: I inpatient (E emergency, O outpatient, ... are not admissions)
# HL7 table 0112 (discharge disposition) to FHIR's discharge-disposition codes
DISPOSITIONS = {
    "01": "home",
    "02": "other-hcf",
    "03": "snf",
    "04": "long",  # intermediate care
    "05": "other-hcf",
    "06": "home",  # home under care of a home health service
    "07": "aadvice",
    "20": "exp",
    "50": "hosp",
    "51": "hosp",
    "62": "rehab",
}


class DischargeEvent(BaseModel):
    header: MessageHeader
    patient_id: str  # PID-3 first identifier (an id, not a name)
    patient_id_authority: str
    visit_number: str  # PV1-19
    patient_class: str  # PV1-2
    disposition: str  # FHIR discharge-disposition code ("oth" when PV1-36 is empty or unknown)
    discharged_at: datetime


def parse_adt_a03(raw: bytes) -> DischargeEvent:
    env = envelope(raw)
    env.require("ADT", "A03")
    header, ctrl = env.header, env.control_id

    def missing(what: str) -> Unprocessable:
        return Unprocessable(f"{what} is empty", ctrl, header, REQUIRED_FIELD_MISSING)

    pid, pv1, evn = env.segment("PID"), env.segment("PV1"), env.segment("EVN")
    if pid is None:
        raise Unprocessable("no PID segment", ctrl, header, REQUIRED_FIELD_MISSING)
    if pv1 is None:
        raise Unprocessable("no PV1 segment", ctrl, header, REQUIRED_FIELD_MISSING)
    pid3 = field(pid, 3).split("~")[0]
    patient_id = component(pid3, 0).strip()
    if not patient_id:
        raise missing("PID-3 patient identifier")
    visit = component(field(pv1, 19), 0).strip()
    if not visit:
        raise missing("PV1-19 visit number")
    patient_class = component(field(pv1, 2), 0).strip()
    if patient_class not in INPATIENT_CLASSES:
        reason = f"PV1-2 patient class {patient_class or 'empty'} is not an inpatient stay"
        raise Unprocessable(reason, ctrl, header)
    stamps = [field(pv1, 45)] + ([field(evn, 6), field(evn, 2)] if evn else [])
    when = next((t for s in stamps if (t := hl7_timestamp(s)) is not None), None)
    if when is None:
        raise missing("PV1-45 discharge date/time (and EVN-6, EVN-2)")
    return DischargeEvent(
        header=header,
        patient_id=patient_id,
        patient_id_authority=component(pid3, 3),
        visit_number=visit,
        patient_class=patient_class,
        disposition=DISPOSITIONS.get(component(field(pv1, 36), 0).strip(), "oth"),
        discharged_at=when,
    )

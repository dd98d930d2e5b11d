"""ORU^R01 (HL7 v2.3 - v2.5.1) to careflow's lab-result model, after the envelope checks every
message gets (careflow/hl7/message.py): AE for no patient identifier or no usable OBX."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

from careflow.hl7.message import (
    REQUIRED_FIELD_MISSING,
    MessageHeader,
    Unprocessable,
    component,
    date_of,
    envelope,
    field,
    person,
)


class LabObservation(BaseModel):
    set_id: str
    code: str  # LOINC when the coding system says LN
    code_system: str
    display: str
    value: str
    numeric_value: float | None
    units: str
    reference_range: str
    abnormal_flags: list[str] = Field(default_factory=list)
    result_status: str
    observed_at: str  # HL7 TS as sent (OBX-14, else OBR-7)


class LabOrder(BaseModel):
    placer_order_number: str
    filler_order_number: str
    service_code: str
    service_display: str
    observations: list[LabObservation]
    ordering_provider: str = ""  # OBR-16 as a person reads it: "JOHN SMITH (1234)"


class OruMessage(BaseModel):
    header: MessageHeader
    patient_id: str  # PID-3 first identifier (an id, not a name)
    patient_id_authority: str
    orders: list[LabOrder]
    # What the message says of the patient, for an alert when the EHR does not know the MRN.
    # PHI: travels only in encrypted payloads, never in logs, ids or search attributes.
    patient_name: str = ""  # PID-5 as "JANE DOE"
    birth_date: str = ""  # PID-7 as YYYY-MM-DD (or as sent when it is no date)


def _number(value: str) -> float | None:
    try:
        return float(value.strip().lstrip("<>="))
    except ValueError:
        return None


def parse_oru(raw: bytes) -> OruMessage:
    env = envelope(raw)
    env.require("ORU", "R01")
    header, ctrl = env.header, env.control_id
    pid = env.segment("PID")
    if pid is None:
        raise Unprocessable("no PID segment", ctrl, header, REQUIRED_FIELD_MISSING)
    pid3 = field(pid, 3).split("~")[0]
    patient_id = component(pid3, 0).strip()
    if not patient_id:
        raise Unprocessable("PID-3 patient identifier is empty", ctrl, header, REQUIRED_FIELD_MISSING)

    orders: list[LabOrder] = []
    obr_time = ""
    for seg in env.segments:
        if seg.startswith("OBR|"):
            svc = field(seg, 4)
            orders.append(
                LabOrder(
                    placer_order_number=component(field(seg, 2), 0),
                    filler_order_number=component(field(seg, 3), 0),
                    service_code=component(svc, 0),
                    service_display=component(svc, 1),
                    observations=[],
                    ordering_provider=person(field(seg, 16), with_id=True),
                )
            )
            obr_time = field(seg, 7)
        elif seg.startswith("OBX|"):
            if not orders:
                raise Unprocessable("OBX before any OBR", ctrl, header)
            code = field(seg, 3)
            value = field(seg, 5)
            if not component(code, 0) or not value:
                raise Unprocessable(f"OBX {field(seg, 1) or '?'} has no code or no value", ctrl, header)
            orders[-1].observations.append(
                LabObservation(
                    set_id=field(seg, 1),
                    code=component(code, 0),
                    display=component(code, 1),
                    code_system=component(code, 2),
                    value=value,
                    numeric_value=_number(value) if field(seg, 2) in ("NM", "SN", "") else None,
                    units=component(field(seg, 6), 0),
                    reference_range=field(seg, 7),
                    abnormal_flags=[f for f in field(seg, 8).split("~") if f],
                    result_status=field(seg, 11),
                    observed_at=field(seg, 14) or obr_time,
                )
            )
    orders = [o for o in orders if o.observations]
    if not orders:
        raise Unprocessable("no OBR group with an OBX result", ctrl, header)
    return OruMessage(
        header=header,
        patient_id=patient_id,
        patient_id_authority=component(pid3, 3),
        orders=orders,
        patient_name=person(field(pid, 5).split("~")[0]),
        birth_date=date_of(field(pid, 7)),
    )


def result_key(msg: OruMessage, order: LabOrder, obs: LabObservation) -> str:
    """Stable id of one result: the same result resent (new MSH-10 or not) maps to the same key.

    Built from the sending facility, the filler order number and the observation code; hashed so
    workflow ids carry no identifiers a reader could link to a patient.
    """
    basis = "|".join(
        (
            msg.header.sending_facility,
            order.filler_order_number or msg.header.control_id,
            obs.code,
            obs.set_id,
        )
    )
    return hashlib.sha256(basis.encode()).hexdigest()[:32]

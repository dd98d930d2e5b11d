"""ORU^R01 (HL7 v2.3 - v2.5.1) to careflow's lab-result model, with explicit checks.

hl7apy parses leniently (`MSH|^~\\&|X\\rPID|garbage` parses), so acceptance is decided here, field by
field, never by "it parsed":
- `Malformed` (ACK AR): not HL7 at all, no MSH, wrong encoding characters, no control id.
- `Unprocessable` (ACK AE): valid HL7 that careflow cannot act on: another message type or version,
  no patient identifier, no usable OBX.
Both carry the MSH-10 control id when it could be read, so the ACK can echo it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message
from pydantic import BaseModel, Field

ENCODING_CHARS = "^~\\&"
SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")


class HL7Rejection(Exception):
    ack_code = "AR"
    error_code = "100^Segment sequence error^HL70357"  # ERR-3, HL7 table 0357

    def __init__(
        self,
        reason: str,
        control_id: str | None = None,
        header: MessageHeader | None = None,
        error_code: str | None = None,
    ):
        self.reason = reason
        self.control_id = control_id
        self.header = header
        if error_code:
            self.error_code = error_code
        super().__init__(reason)


class Malformed(HL7Rejection):
    ack_code = "AR"


class Unprocessable(HL7Rejection):
    ack_code = "AE"
    error_code = "207^Application internal error^HL70357"


REQUIRED_FIELD_MISSING = "101^Required field missing^HL70357"
UNSUPPORTED_MESSAGE_TYPE = "200^Unsupported message type^HL70357"
UNSUPPORTED_VERSION = "203^Unsupported version id^HL70357"


class MessageHeader(BaseModel):
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_type: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = ""


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


def _field(segment: str, index: int, sep: str = "|") -> str:
    parts = segment.split(sep)
    return parts[index] if index < len(parts) else ""


def _component(value: str, index: int) -> str:
    parts = value.split("^")
    return parts[index] if index < len(parts) else ""


def _header(msh: str) -> MessageHeader:
    # MSH-1 is the field separator itself, so MSH-n sits at split index n-1.
    return MessageHeader(
        sending_application=_component(_field(msh, 2), 0),
        sending_facility=_component(_field(msh, 3), 0),
        receiving_application=_component(_field(msh, 4), 0),
        receiving_facility=_component(_field(msh, 5), 0),
        message_type=_field(msh, 8),
        control_id=_field(msh, 9).strip(),
        processing_id=_component(_field(msh, 10), 0) or "P",
        version=_component(_field(msh, 11), 0),
    )


def read_header(raw: bytes) -> MessageHeader | None:
    """Best-effort MSH of a frame, for ACKing messages we reject (even oversize ones)."""
    text = raw.decode("latin-1", errors="replace").lstrip()
    if not text.startswith("MSH|"):
        return None
    return _header(text.replace("\n", "\r").split("\r", 1)[0])


def _number(value: str) -> float | None:
    try:
        return float(value.strip().lstrip("<>="))
    except ValueError:
        return None


def parse_oru(raw: bytes) -> OruMessage:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # HL7 v2 commonly uses 8859-1; garbage is caught below
    segments = [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s.strip()]
    if not segments or not segments[0].startswith("MSH"):
        raise Malformed("first segment is not MSH")
    msh = segments[0]
    if len(msh) < 8 or msh[3] != "|" or msh[4:8] != ENCODING_CHARS:
        raise Malformed("MSH must declare the standard field separator and encoding characters")
    header = _header(msh)
    ctrl = header.control_id or None
    if not header.control_id:
        raise Malformed("MSH-10 message control id is empty", None, header, REQUIRED_FIELD_MISSING)
    if any(not s[:3].isalnum() or not s[:3].isupper() or (len(s) > 3 and s[3] != "|") for s in segments):
        raise Malformed("a segment does not start with a three-character segment id", ctrl, header)
    try:
        parse_message("\r".join(segments), find_groups=False)
    except (HL7apyException, ValueError, KeyError, IndexError) as exc:
        raise Malformed(f"HL7 structure error: {type(exc).__name__}", ctrl, header) from None

    if not (_component(header.message_type, 0) == "ORU" and _component(header.message_type, 1) == "R01"):
        reason = f"message type {header.message_type or 'empty'} is not ORU^R01"
        raise Unprocessable(reason, ctrl, header, UNSUPPORTED_MESSAGE_TYPE)
    if header.version not in SUPPORTED_VERSIONS:
        reason = f"HL7 version {header.version or 'empty'} is not supported"
        raise Unprocessable(reason, ctrl, header, UNSUPPORTED_VERSION)

    pid = next((s for s in segments if s.startswith("PID|")), None)
    if pid is None:
        raise Unprocessable("no PID segment", ctrl, header, REQUIRED_FIELD_MISSING)
    pid3 = _field(pid, 3).split("~")[0]
    patient_id = _component(pid3, 0).strip()
    if not patient_id:
        raise Unprocessable("PID-3 patient identifier is empty", ctrl, header, REQUIRED_FIELD_MISSING)

    orders: list[LabOrder] = []
    obr_time = ""
    for seg in segments:
        if seg.startswith("OBR|"):
            svc = _field(seg, 4)
            orders.append(
                LabOrder(
                    placer_order_number=_component(_field(seg, 2), 0),
                    filler_order_number=_component(_field(seg, 3), 0),
                    service_code=_component(svc, 0),
                    service_display=_component(svc, 1),
                    observations=[],
                    ordering_provider=_person(_field(seg, 16), with_id=True),
                )
            )
            obr_time = _field(seg, 7)
        elif seg.startswith("OBX|"):
            if not orders:
                raise Unprocessable("OBX before any OBR", ctrl, header)
            code = _field(seg, 3)
            value = _field(seg, 5)
            if not _component(code, 0) or not value:
                raise Unprocessable(f"OBX {_field(seg, 1) or '?'} has no code or no value", ctrl, header)
            orders[-1].observations.append(
                LabObservation(
                    set_id=_field(seg, 1),
                    code=_component(code, 0),
                    display=_component(code, 1),
                    code_system=_component(code, 2),
                    value=value,
                    numeric_value=_number(value) if _field(seg, 2) in ("NM", "SN", "") else None,
                    units=_component(_field(seg, 6), 0),
                    reference_range=_field(seg, 7),
                    abnormal_flags=[f for f in _field(seg, 8).split("~") if f],
                    result_status=_field(seg, 11),
                    observed_at=_field(seg, 14) or obr_time,
                )
            )
    orders = [o for o in orders if o.observations]
    if not orders:
        raise Unprocessable("no OBR group with an OBX result", ctrl, header)
    return OruMessage(
        header=header,
        patient_id=patient_id,
        patient_id_authority=_component(pid3, 3),
        orders=orders,
        patient_name=_person(_field(pid, 5).split("~")[0]),
        birth_date=_date(_field(pid, 7)),
    )


def _person(xpn: str, *, with_id: bool = False) -> str:
    """An XPN (family^given^middle) or XCN (id^family^given^middle) as a person reads it."""
    parts = xpn.split("^")
    ident, name = (parts[0], parts[1:]) if with_id else ("", parts)
    family, given = [*name, "", ""][:2]
    middle = name[2] if len(name) > 2 else ""
    full = " ".join(p for p in (given, middle, family) if p.strip())
    return f"{full} ({ident})" if ident and full else full or ident


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


def _date(ts: str) -> str:
    parsed = hl7_timestamp(ts)
    return parsed.date().isoformat() if parsed else ts.strip()


def hl7_timestamp(ts: str) -> datetime | None:
    digits = ts.split("+")[0].split("-")[0].split(".")[0]
    for fmt, n in (("%Y%m%d%H%M%S", 14), ("%Y%m%d%H%M", 12), ("%Y%m%d", 8)):
        if len(digits) >= n:
            try:
                return datetime.strptime(digits[:n], fmt)
            except ValueError:
                return None
    return None

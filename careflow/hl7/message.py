"""What every inbound HL7 v2 message goes through before its type's parser: the envelope checks
(`envelope`), the rejections the listener turns into ACKs, and the field helpers.

hl7apy parses leniently (`MSH|^~\\&|X\\rPID|garbage` parses), so acceptance is decided here, field by
field, never by "it parsed":
- `Malformed` (ACK AR): not HL7 at all, no MSH, wrong encoding characters, no control id.
- `Unprocessable` (ACK AE): valid HL7 that careflow cannot act on: another message type or version,
  a required field empty.
Both carry the MSH-10 control id when it could be read, so the ACK can echo it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message
from pydantic import BaseModel

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


def field(segment: str, index: int, sep: str = "|") -> str:
    parts = segment.split(sep)
    return parts[index] if index < len(parts) else ""


def component(value: str, index: int) -> str:
    parts = value.split("^")
    return parts[index] if index < len(parts) else ""


def header_of(msh: str) -> MessageHeader:
    # MSH-1 is the field separator itself, so MSH-n sits at split index n-1.
    return MessageHeader(
        sending_application=component(field(msh, 2), 0),
        sending_facility=component(field(msh, 3), 0),
        receiving_application=component(field(msh, 4), 0),
        receiving_facility=component(field(msh, 5), 0),
        message_type=field(msh, 8),
        control_id=field(msh, 9).strip(),
        processing_id=component(field(msh, 10), 0) or "P",
        version=component(field(msh, 11), 0),
    )


def read_header(raw: bytes) -> MessageHeader | None:
    """Best-effort MSH of a frame, for ACKing messages we reject (even oversize ones)."""
    text = raw.decode("latin-1", errors="replace").lstrip()
    if not text.startswith("MSH|"):
        return None
    return header_of(text.replace("\n", "\r").split("\r", 1)[0])


def person(xpn: str, *, with_id: bool = False) -> str:
    """An XPN (family^given^middle) or XCN (id^family^given^middle) as a person reads it."""
    parts = xpn.split("^")
    ident, name = (parts[0], parts[1:]) if with_id else ("", parts)
    family, given = [*name, "", ""][:2]
    middle = name[2] if len(name) > 2 else ""
    full = " ".join(p for p in (given, middle, family) if p.strip())
    return f"{full} ({ident})" if ident and full else full or ident


def date_of(ts: str) -> str:
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


@dataclass(frozen=True)
class Envelope:
    header: MessageHeader
    segments: list[str]

    @property
    def control_id(self) -> str:
        return self.header.control_id

    def segment(self, name: str) -> str | None:
        return next((s for s in self.segments if s.startswith(f"{name}|")), None)

    def require(self, message_type: str, trigger: str) -> None:
        """Unprocessable (AE) unless this is `message_type^trigger` in a supported version."""
        h, ctrl = self.header, self.header.control_id
        if not (component(h.message_type, 0) == message_type and component(h.message_type, 1) == trigger):
            reason = f"message type {h.message_type or 'empty'} is not {message_type}^{trigger}"
            raise Unprocessable(reason, ctrl, h, UNSUPPORTED_MESSAGE_TYPE)
        if h.version not in SUPPORTED_VERSIONS:
            raise Unprocessable(
                f"HL7 version {h.version or 'empty'} is not supported", ctrl, h, UNSUPPORTED_VERSION
            )


def envelope(raw: bytes) -> Envelope:
    """The message's segments and header, once it is HL7 at all (else Malformed)."""
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
    header = header_of(msh)
    ctrl = header.control_id or None
    if not header.control_id:
        raise Malformed("MSH-10 message control id is empty", None, header, REQUIRED_FIELD_MISSING)
    if any(not s[:3].isalnum() or not s[:3].isupper() or (len(s) > 3 and s[3] != "|") for s in segments):
        raise Malformed("a segment does not start with a three-character segment id", ctrl, header)
    try:
        parse_message("\r".join(segments), find_groups=False)
    except (HL7apyException, ValueError, KeyError, IndexError) as exc:
        raise Malformed(f"HL7 structure error: {type(exc).__name__}", ctrl, header) from None
    return Envelope(header, segments)

"""HL7 v2 ACK messages (original acknowledgment mode): AA, AE, AR echoing MSH-10 in MSA-2."""

from __future__ import annotations

from datetime import UTC, datetime

from careflow.hl7.message import MessageHeader

ACK_APPLICATION = "CAREFLOW"


def _clean(text: str) -> str:
    # A reason must not break the message: no separators or segment terminators.
    return "".join(" " if c in "|^~\\&\r\n" else c for c in text)[:200]


def build_ack(
    code: str,
    header: MessageHeader | None,
    *,
    reason: str = "",
    error_code: str = "207^Application internal error^HL70357",
    control_id: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """ACK for `header` (the received MSH; None when it could not be read)."""
    assert code in ("AA", "AE", "AR")
    h = header or MessageHeader()
    ts = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    echoed = _clean(control_id if control_id is not None else h.control_id)
    trigger = h.message_type.split("^")[1] if "^" in h.message_type else ""
    version = h.version or "2.5.1"
    segments = [
        "|".join(
            [
                "MSH",
                "^~\\&",
                ACK_APPLICATION,
                _clean(h.receiving_facility),
                _clean(h.sending_application),
                _clean(h.sending_facility),
                ts,
                "",
                f"ACK^{_clean(trigger)}^ACK" if trigger else "ACK",
                f"ACK{ts}{echoed}"[:50],
                _clean(h.processing_id or "P"),
                _clean(version),
            ]
        ),
        "|".join(["MSA", code, echoed, _clean(reason)]),
    ]
    if code != "AA":
        # ERR-3 is a coded element (HL7 table 0357): keep its component separators.
        code_cwe = "^".join(_clean(part) for part in error_code.split("^"))
        segments.append("|".join(["ERR", "", "", code_cwe, "E", "", "", "", _clean(reason)]))
    return ("\r".join(segments) + "\r").encode()

"""ORU^R01 parsing with explicit checks, ACKs, and fuzzing of the parser and the MLLP framer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careflow.hl7.ack import build_ack
from careflow.hl7.message import HL7Rejection, Malformed, Unprocessable
from careflow.hl7.mllp import START, Frame, MllpFramer, Oversize, wrap
from careflow.hl7.oru import parse_oru, result_key
from tests.support.hl7_samples import oru


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"])
def test_parses_supported_versions(version: str) -> None:
    msg = parse_oru(oru(version=version))
    assert msg.header.control_id == "MSG00001" and msg.header.version == version
    assert msg.patient_id == "PAT123" and msg.patient_id_authority == "GENHOSP"
    [order] = msg.orders
    [obs] = order.observations
    assert (obs.code, obs.code_system, obs.numeric_value, obs.units) == ("2160-0", "LN", 2.4, "mg/dL")
    assert obs.reference_range == "0.6-1.2" and obs.abnormal_flags == ["H"] and obs.result_status == "F"


def test_several_obr_groups_keep_their_observations() -> None:
    raw = oru(results=[("2823-3", "Potassium", "6.8", "mmol/L", "3.5-5.1", "HH")]).decode()
    raw += "OBR|2|ORD2|FIL988^LAB|718-7^Hemoglobin^LN|||20261127075600\r"
    raw += "OBX|1|NM|718-7^Hemoglobin^LN||6.1|g/dL|12-16|LL|||F\r"
    msg = parse_oru(raw.encode())
    assert [o.filler_order_number for o in msg.orders] == ["FIL987", "FIL988"]
    assert [o.observations[0].code for o in msg.orders] == ["2823-3", "718-7"]
    # the second OBX has no OBX-14: the OBR's observation time is used
    assert msg.orders[1].observations[0].observed_at == "20261127075600"


def test_result_key_is_stable_across_resends_and_distinct_per_observation() -> None:
    a, b = parse_oru(oru("MSG1")), parse_oru(oru("MSG2"))  # a resend with a new control id
    key = result_key(a, a.orders[0], a.orders[0].observations[0])
    assert key == result_key(b, b.orders[0], b.orders[0].observations[0])
    c = parse_oru(oru(filler="FIL999"))
    assert key != result_key(c, c.orders[0], c.orders[0].observations[0])
    assert "PAT123" not in key and len(key) == 32


@pytest.mark.parametrize(
    ("raw", "kind", "fragment"),
    [
        (b"MSH|^~\\&|X\rPID|garbage", Malformed, "control id"),
        (b"garbage", Malformed, "not MSH"),
        (b"", Malformed, "not MSH"),
        (b"MSH|#~\\&|LAB|H|C|H|2026||ORU^R01|1|P|2.5\r", Malformed, "encoding characters"),
        (oru().replace(b"PID|", b"pid|"), Malformed, "segment id"),
        (oru(message_type="ADT^A01"), Unprocessable, "ADT^A01 is not ORU^R01"),
        (oru(version="2.7"), Unprocessable, "version 2.7"),
        (oru(patient_id=""), Unprocessable, "PID-3"),
        (oru().split(b"\rOBX")[0], Unprocessable, "no OBR group with an OBX"),
        (oru(results=[("2160-0", "Creatinine", "", "mg/dL", "", "")]), Unprocessable, "no code or no value"),
    ],
)
def test_rejections_are_specific(raw: bytes, kind: type[HL7Rejection], fragment: str) -> None:
    with pytest.raises(kind) as info:
        parse_oru(raw)
    assert fragment in info.value.reason


def test_ack_echoes_control_id_and_carries_the_reason() -> None:
    msg = parse_oru(oru("CTRL-42"))
    aa = build_ack("AA", msg.header).decode().split("\r")
    assert aa[0].startswith("MSH|^~\\&|CAREFLOW|GENHOSP|LAB|GENHOSP|") and "|ACK^R01^ACK|" in aa[0]
    assert aa[1] == "MSA|AA|CTRL-42|"
    with pytest.raises(Unprocessable) as info:
        parse_oru(oru("CTRL-43", version="2.7"))
    rej = info.value
    ae = (
        build_ack("AE", rej.header, reason=rej.reason, error_code=rej.error_code, control_id=rej.control_id)
        .decode()
        .split("\r")
    )
    assert ae[1].startswith("MSA|AE|CTRL-43|HL7 version 2.7")
    assert ae[2].startswith("ERR|||203^Unsupported version id^HL70357|E|")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_parser_never_fails_other_than_by_rejection(raw: bytes) -> None:
    try:
        parse_oru(raw)
    except HL7Rejection as rej:
        build_ack(rej.ack_code, rej.header, reason=rej.reason, error_code=rej.error_code)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "MSH",
                "PID",
                "OBR",
                "OBX",
                "ZZZ",
                "|",
                "^",
                "~",
                "\\",
                "&",
                "\r",
                "2.5",
                "ORU",
                "R01",
                "x",
                "1",
                "\x0b",
                "\x1c",
            ]
        ),
        max_size=60,
    )
)
def test_parser_on_hl7_shaped_noise(tokens: list[str]) -> None:
    raw = ("MSH|^~\\&|" + "".join(tokens)).encode()
    try:
        parse_oru(raw)
    except HL7Rejection:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=300).filter(lambda b: START not in b and b"\x1c\x0d" not in b), max_size=8),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=40),
    st.binary(max_size=20).filter(lambda b: START not in b),
)
def test_framer_reassembles_frames_from_any_chunking(
    payloads: list[bytes], cuts: list[int], junk: bytes
) -> None:
    stream = junk + b"".join(wrap(p) for p in payloads)
    framer = MllpFramer(max_frame=256)
    out: list[Frame | Oversize] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += framer.feed(stream[pos : pos + step])
        pos, i = pos + step, i + 1
    expected = [Frame(p) if len(p) <= 256 else ("oversize", len(p)) for p in payloads]
    got = [o if isinstance(o, Frame) else ("oversize", o.size) for o in out]
    assert got == expected
    assert not framer.mid_frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_framer_survives_arbitrary_bytes(data: bytes) -> None:
    framer = MllpFramer(max_frame=128)
    for item in framer.feed(data):
        assert isinstance(item, Frame | Oversize)
        if isinstance(item, Frame):
            assert len(item.payload) <= 128


def test_patient_and_ordering_provider_as_the_message_names_them() -> None:
    msg = parse_oru(oru(ordering_provider="9876^HOUSE^GREGORY^M"))
    assert (msg.patient_name, msg.birth_date) == ("JANE DOE", "1950-01-01")
    assert msg.orders[0].ordering_provider == "GREGORY M HOUSE (9876)"
    assert parse_oru(oru()).orders[0].ordering_provider == ""

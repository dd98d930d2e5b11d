"""ORU^R01 messages as lab systems send them (synthetic ids only)."""

from __future__ import annotations


def oru(
    control_id: str = "MSG00001",
    *,
    version: str = "2.5.1",
    patient_id: str = "PAT123",
    results: list[tuple[str, str, str, str, str, str]] | None = None,
    filler: str = "FIL987",
    facility: str = "GENHOSP",
    message_type: str = "ORU^R01^ORU_R01",
    ordering_provider: str = "",
) -> bytes:
    """results: (loinc, display, value, units, range, flags) per OBX, all under one OBR."""
    results = results or [("2160-0", "Creatinine", "2.4", "mg/dL", "0.6-1.2", "H")]
    segs = [
        f"MSH|^~\\&|LAB|{facility}|CAREFLOW|{facility}|20261127080000||{message_type}|{control_id}|P|{version}",
        f"PID|1||{patient_id}^^^{facility}^MR||DOE^JANE||19500101|F",
        f"OBR|1|ORD1|{filler}^LAB|24323-8^Metabolic panel^LN|||20261127075500|||||||||{ordering_provider}",
    ]
    for i, (code, display, value, units, rng, flags) in enumerate(results, 1):
        segs.append(f"OBX|{i}|NM|{code}^{display}^LN||{value}|{units}|{rng}|{flags}|||F|||20261127075900")
    return ("\r".join(segs) + "\r").encode()


def adt_a03(
    control_id: str = "ADT00001",
    *,
    version: str = "2.5.1",
    patient_id: str = "PAT123",
    visit: str = "V-7781",
    patient_class: str = "I",
    disposition: str = "03",
    discharged: str = "20261127143000",
    message_type: str = "ADT^A03^ADT_A03",
    facility: str = "GENHOSP",
) -> bytes:
    """A discharge as an EHR's ADT feed sends it: EVN, PID, PV1 (PV1-19 visit, -36 disposition, -45 time)."""
    pv1 = (
        ["PV1", "1", patient_class]
        + [""] * 16
        + [visit]
        + [""] * 16
        + [disposition]
        + [""] * 8
        + [discharged]
    )
    segs = [
        f"MSH|^~\\&|ADT|{facility}|CAREFLOW|{facility}|20261127143100||{message_type}|{control_id}|P|{version}",
        "EVN|A03|20261127143100",
        f"PID|1||{patient_id}^^^{facility}^MR||DOE^JANE||19500101|F",
        "|".join(pv1),
    ]
    return ("\r".join(segs) + "\r").encode()

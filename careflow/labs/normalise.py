"""ORU observations to careflow's LabResult: canonical units, parsed times, a stable result key."""

from __future__ import annotations

from datetime import UTC, datetime

from careflow.hl7.message import hl7_timestamp
from careflow.hl7.oru import OruMessage, result_key
from careflow.models.lab_alert import LabResult

# (LOINC, unit as sent, lower-cased) -> factor to careflow's canonical unit (the rules' units)
UNIT_FACTORS: dict[tuple[str, str], float] = {
    ("2160-0", "umol/l"): 1 / 88.42,  # creatinine -> mg/dL
    ("2160-0", "µmol/l"): 1 / 88.42,
    ("2345-7", "mmol/l"): 18.016,  # glucose -> mg/dL
    ("718-7", "g/l"): 0.1,  # hemoglobin -> g/dL
    ("718-7", "mmol/l"): 1.611,
}
CANONICAL_UNITS = {"2160-0": "mg/dL", "2345-7": "mg/dL", "718-7": "g/dL"}


def _utc(ts: str) -> datetime | None:
    parsed = hl7_timestamp(ts)
    # HL7 TS without an offset is local to the sender; careflow records it as UTC, as sent.
    return parsed.replace(tzinfo=UTC) if parsed else None


def results_from_oru(msg: OruMessage, received_at: datetime) -> list[LabResult]:
    out = []
    for order in msg.orders:
        for obs in order.observations:
            value, units = obs.numeric_value, obs.units
            factor = UNIT_FACTORS.get((obs.code, units.lower()))
            if value is not None and factor is not None:
                value, units = round(value * factor, 4), CANONICAL_UNITS[obs.code]
            out.append(
                LabResult(
                    result_key=result_key(msg, order, obs),
                    patient_id=msg.patient_id,
                    loinc=obs.code,
                    display=obs.display,
                    value=value,
                    value_text=obs.value,
                    units=units,
                    reference_range=obs.reference_range,
                    abnormal_flags=obs.abnormal_flags,
                    observed_at=_utc(obs.observed_at),
                    received_at=received_at,
                    patient_name=msg.patient_name,
                    birth_date=msg.birth_date,
                    ordering_provider=order.ordering_provider,
                    sending_facility=msg.header.sending_facility,
                )
            )
    return out

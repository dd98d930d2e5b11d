"""ADT^A03 discharges: what careflow takes from them, and the AE/AR each bad one gets."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from careflow.hl7.adt import parse_adt_a03
from careflow.hl7.message import Malformed, Unprocessable
from tests.support.hl7_samples import adt_a03, oru


def test_a_discharge_names_the_encounter_the_time_and_where_the_patient_went() -> None:
    event = parse_adt_a03(adt_a03())
    assert (event.patient_id, event.patient_id_authority) == ("PAT123", "GENHOSP")
    assert event.visit_number == "V-7781" and event.patient_class == "I"
    assert event.disposition == "snf"  # table 0112 "03" (skilled nursing) in FHIR's code
    assert event.discharged_at == datetime(2026, 11, 27, 14, 30)
    assert event.header.control_id == "ADT00001"


@pytest.mark.parametrize(("code", "fhir"), [("01", "home"), ("07", "aadvice"), ("50", "hosp"), ("", "oth"),
                                            ("99", "oth")])  # fmt: skip
def test_dispositions_map_to_fhir_codes(code: str, fhir: str) -> None:
    assert parse_adt_a03(adt_a03(disposition=code)).disposition == fhir


def test_the_event_time_stands_in_for_a_missing_discharge_time() -> None:
    assert parse_adt_a03(adt_a03(discharged="")).discharged_at == datetime(2026, 11, 27, 14, 31)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (adt_a03(visit=""), "PV1-19 visit number"),
        (adt_a03(patient_id=""), "PID-3 patient identifier"),
        (adt_a03(patient_class="O"), "not an inpatient stay"),
        (adt_a03(message_type="ADT^A01^ADT_A01"), "is not ADT^A03"),
        (adt_a03(version="2.2"), "version 2.2 is not supported"),
        (oru(), "is not ADT^A03"),
    ],
)
def test_a_discharge_careflow_cannot_act_on_gets_ae(message: bytes, reason: str) -> None:
    with pytest.raises(Unprocessable, match=re.escape(reason)) as err:
        parse_adt_a03(message)
    assert err.value.ack_code == "AE" and err.value.control_id


def test_garbage_gets_ar() -> None:
    with pytest.raises(Malformed) as err:
        parse_adt_a03(b"PV1|1|I\r")
    assert err.value.ack_code == "AR"

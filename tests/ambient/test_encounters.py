"""Synthetic encounters (careflow/ambient/encounters.py): scripted visits of synthetic EHR patients
with their expected diagnoses, the diarized transcript format, and its parser's refusals."""

from __future__ import annotations

from datetime import date

import pytest

from careflow.ambient.encounters import Speaker, Specialty, Turn, chart, encounter, parse_diarized
from careflow.deid import Identifiers, deidentify, leaks
from careflow.fhir import codes as c
from careflow.fhir.synthetic import patient_bundle

AS_OF = date(2026, 11, 27)


def chart_of(seed: int, index: int) -> tuple[dict, list[str], list[str]]:
    """A synthetic EHR patient's chart, read the way the demo and the bench read it."""
    _, bundle = patient_bundle(seed, index, AS_OF)
    return chart([e["resource"] for e in bundle["entry"]])


@pytest.mark.parametrize("specialty", list(Specialty))
@pytest.mark.parametrize("minutes", [2, 15])
def test_a_visit_of_the_asked_length_about_the_patients_own_conditions(
    specialty: Specialty, minutes: int
) -> None:
    patient, conditions, meds = chart_of(7, 3)
    enc = encounter(patient, conditions, meds, specialty, minutes, seed=1)
    assert minutes * 0.85 <= enc.minutes <= minutes * 1.3
    assert enc.turns[0].speaker is Speaker.DOCTOR and {t.speaker for t in enc.turns} == set(Speaker)
    assert all(k in conditions for k in enc.discussed) or enc.discussed == (
        {"primary-care": "hypertension", "cardiology": "hypertension", "orthopedics": "low_back_pain",
         "emergency": "chest_pain"}[specialty.value],
    )  # fmt: skip
    assert enc.expected_codes == [c.CONDITIONS[k].icd10 for k in enc.discussed]
    assert all(m in meds for m in enc.medications)
    assert encounter(patient, conditions, meds, specialty, minutes, seed=1) == enc  # reproducible


def test_the_patients_identifiers_are_planted_and_de_identification_removes_them() -> None:
    patient, conditions, meds = chart_of(7, 5)
    enc = encounter(patient, conditions, meds, Specialty.PRIMARY_CARE, 3, seed=2)
    text = enc.diarized()
    known = Identifiers.of_patient(patient)
    assert enc.patient_name in text and spoken(enc.birth_date) in text
    assert leaks(text, known)  # the raw transcript carries the patient's name and birth date
    assert leaks(deidentify(text, known).text, known) == []


def spoken(d: date) -> str:
    return f"{d.strftime('%B')} {d.day}, {d.year}"


def test_a_diarized_transcript_round_trips() -> None:
    patient, conditions, meds = chart_of(3, 1)
    enc = encounter(patient, conditions, meds, Specialty.CARDIOLOGY, 2, seed=3)
    assert tuple(parse_diarized(enc.diarized())) == enc.turns
    assert parse_diarized("[Doctor] How are you?  [PATIENT]  Fine,\n thanks. [physician] Good.") == [
        Turn(Speaker.DOCTOR, "How are you?"),
        Turn(Speaker.PATIENT, "Fine, thanks."),
        Turn(Speaker.DOCTOR, "Good."),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("The patient says her chest hurts.", "labels every turn with its speaker"),
        ("Hello there [doctor] how are you", "text before the first speaker tag"),
    ],
)
def test_a_transcript_without_speakers_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_diarized(text)

"""ICD-10-CM candidates against the real code set (careflow/ambient/icd10.py)."""

from __future__ import annotations

from careflow.ambient.icd10 import MAX_CANDIDATES, Candidate, normalise, validate
from careflow.fhir import codes as c


def test_real_billable_codes_survive_with_the_code_sets_description() -> None:
    kept, dropped = validate(["E11.9", "i10", "N1830", "E11.9"])
    assert kept == [
        Candidate("E11.9", "Type 2 diabetes mellitus without complications"),
        Candidate("I10", "Essential (primary) hypertension"),
        Candidate("N18.30", "Chronic kidney disease, stage 3 unspecified"),
    ]
    assert dropped == []  # the repeated E11.9 is one candidate


def test_invented_and_category_codes_are_dropped_with_the_reason() -> None:
    kept, dropped = validate(["E11", "Z99.99", "XYZ", "", "R07.9"])
    assert [k.code for k in kept] == ["R07.9"]
    assert [(d.code, d.reason.split(":")[0]) for d in dropped] == [
        ("E11", "not billable"),
        ("Z99.99", "not an ICD-10-CM code"),
        ("XYZ", "not an ICD-10-CM code"),
        ("", "not an ICD-10-CM code"),
    ]


def test_at_most_25_candidates() -> None:
    many = ["E11.9", "I10", "E78.5", "E66.9", "J44.9", "I48.91", "I50.9", "M06.9", "M17.11", "M54.50",
            "J44.1", "J18.9", "A41.9", "N17.9", "R07.9", "N18.30", "E11.65", "E11.22", "I25.10", "I21.4",
            "K21.9", "F32.9", "G47.33", "E03.9", "D64.9", "N39.0", "R51.9"]  # fmt: skip
    kept, dropped = validate(many)
    assert len(kept) == MAX_CANDIDATES and [d.code for d in dropped] == many[MAX_CANDIDATES:]
    assert all("over the limit" in d.reason for d in dropped)


def test_every_condition_the_synthetic_ehr_codes_is_a_real_billable_code() -> None:
    kept, dropped = validate(cc.icd10 for cc in c.CONDITIONS.values())
    assert dropped == [] and len(kept) == len(c.CONDITIONS)
    assert normalise("m1711") == "M17.11" and normalise("I10") == "I10"

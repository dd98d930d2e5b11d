"""Baseline-aware urgency rules: the deterministic floor of the lab-alert assessment."""

from __future__ import annotations

import pytest

from careflow.labs.rules import assess_rules
from careflow.models.lab_alert import LabResult, PatientLabContext, Urgency


def result(
    loinc: str, value: float | None, flags: list[str] | None = None, text: str | None = None
) -> LabResult:
    return LabResult(
        result_key="k",
        patient_id="p",
        loinc=loinc,
        value=value,
        value_text=text if text is not None else str(value),
        abnormal_flags=flags or [],
    )


NORMAL_KIDNEYS = PatientLabContext(baseline=[0.8, 0.9, 0.85, 0.9])
CKD = PatientLabContext(baseline=[2.6, 2.8, 2.7, 2.9], condition_codes=["N18.4"])


def test_same_creatinine_critical_for_normal_baseline_not_for_ckd() -> None:
    r = result("2160-0", 2.9)
    assert assess_rules(r, NORMAL_KIDNEYS).urgency == Urgency.CRITICAL
    ckd = assess_rules(r, CKD)
    assert ckd.urgency == Urgency.LOW and ckd.baseline_median == pytest.approx(2.75)


def test_creatinine_stages_against_baseline() -> None:
    assert assess_rules(result("2160-0", 1.3), NORMAL_KIDNEYS).urgency == Urgency.HIGH  # stage 1
    assert assess_rules(result("2160-0", 1.8), NORMAL_KIDNEYS).urgency == Urgency.HIGH  # stage 2
    assert assess_rules(result("2160-0", 5.6), CKD).urgency == Urgency.CRITICAL  # tripled-ish on CKD


def test_hemoglobin_drop_from_baseline_is_critical_even_above_the_limit() -> None:
    ctx = PatientLabContext(baseline=[12.5, 12.8])
    assert assess_rules(result("718-7", 10.0), ctx).urgency == Urgency.CRITICAL
    assert assess_rules(result("718-7", 10.0), PatientLabContext()).urgency == Urgency.LOW


# A labelled set: (loinc, value, flags, expected). Critical results must never be missed.
LABELLED = [
    ("2823-3", 6.8, ["HH"], Urgency.CRITICAL),
    ("2823-3", 2.5, ["LL"], Urgency.CRITICAL),
    ("2823-3", 6.5, [], Urgency.CRITICAL),
    ("2823-3", 5.7, ["H"], Urgency.HIGH),
    ("2823-3", 4.2, [], Urgency.LOW),
    ("2951-2", 118, [], Urgency.CRITICAL),
    ("2951-2", 162, [], Urgency.CRITICAL),
    ("2951-2", 139, [], Urgency.LOW),
    ("718-7", 6.1, ["LL"], Urgency.CRITICAL),
    ("718-7", 13.5, [], Urgency.LOW),
    ("2524-7", 4.6, [], Urgency.CRITICAL),
    ("2524-7", 2.4, [], Urgency.HIGH),
    ("2524-7", 1.1, [], Urgency.LOW),
    ("2345-7", 38, [], Urgency.CRITICAL),
    ("2345-7", 520, [], Urgency.CRITICAL),
    ("2345-7", 105, [], Urgency.LOW),
    ("6690-2", 1.2, [], Urgency.CRITICAL),
    ("6690-2", 34.0, [], Urgency.CRITICAL),
    ("6690-2", 7.0, [], Urgency.LOW),
    ("6598-7", 0.35, [], Urgency.CRITICAL),
    ("6598-7", 0.01, [], Urgency.LOW),
    ("10839-9", 2.1, [], Urgency.CRITICAL),
    ("4548-4", 9.1, ["H"], Urgency.HIGH),  # HbA1c: abnormal, never a critical alert by itself
    ("99999-9", 1.0, ["HH"], Urgency.CRITICAL),  # unknown test, lab panic flag: trusted
    ("2160-0", 6.0, [], Urgency.CRITICAL),  # no baseline known: absolute limit
]


@pytest.mark.parametrize(("loinc", "value", "flags", "expected"), LABELLED)
def test_labelled_set(loinc: str, value: float, flags: list[str], expected: Urgency) -> None:
    finding = assess_rules(result(loinc, value, flags), PatientLabContext())
    assert finding.urgency == expected, finding.reasons
    assert finding.reasons


def test_non_numeric_results_fall_back_to_flags() -> None:
    assert (
        assess_rules(result("600-7", None, ["AA"], text="Gram negative rods"), PatientLabContext()).urgency
        == Urgency.CRITICAL
    )
    assert (
        assess_rules(result("600-7", None, [], text="No growth"), PatientLabContext()).urgency == Urgency.LOW
    )

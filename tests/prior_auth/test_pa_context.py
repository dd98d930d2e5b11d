"""The prior-auth context's measurements: the latest value of each code, summarised where the
offline drafter compares thresholds ("HbA1c 8.1 %")."""

from __future__ import annotations

from typing import Any

from careflow.fhir import codes
from careflow.llm import offline_rules
from careflow.llm.types import Evidence
from careflow.prior_auth.summaries import latest_measurements, summarise


def observation(oid: str, loinc: str, value: float | None, when: str, unit: str = "%") -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": codes.LOINC, "code": loinc, "display": "Hemoglobin A1c"}]},
        "effectiveDateTime": when,
        "referenceRange": [{"low": {"value": 4.0}, "high": {"value": 5.6}}],
    }
    if value is not None:
        obs["valueQuantity"] = {"value": value, "unit": unit}
    return obs


def test_the_summary_puts_the_value_after_the_usual_name() -> None:
    text = summarise(observation("a1", "4548-4", 8.1, "2026-09-01T08:00:00Z"))
    assert text == "Observation: HbA1c 8.1 % (LOINC 4548-4, reference 4-5.6), final, 2026-09-01."


def test_only_the_latest_valued_observation_of_each_code_is_kept() -> None:
    newest_first = [
        observation("a3", "4548-4", None, "2026-10-01"),  # pending, no value yet
        observation("a2", "4548-4", 6.4, "2026-08-01"),
        observation("c1", "2160-0", 1.9, "2026-07-01", "mg/dL"),
        observation("a1", "4548-4", 8.9, "2026-02-01"),
    ]
    assert [o["id"] for o in latest_measurements(newest_first)] == ["a2", "c1"]


def test_the_drafter_judges_the_latest_value_not_an_older_one() -> None:
    kept = latest_measurements(
        [observation("a2", "4548-4", 6.4, "2026-08-01"), observation("a1", "4548-4", 8.9, "2026-02-01")]
    )
    record = [
        Evidence(id=f"Observation/{o['id']}", kind="fhir", title="Observation", text=summarise(o))
        for o in kept
    ]
    found = offline_rules.assess_criterion("The most recent HbA1c is 7.0% or higher.", record)
    assert (found.status, found.evidence_ids) == ("not_met", ["Observation/a2"])

"""Charlson from ICD-10 codes, and a discharge's features from the synthetic EHR's FHIR resources."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from careflow.fhir.synthetic import patient_bundle
from careflow.readmission import charlson
from careflow.readmission.features import Disposition
from careflow.readmission.fhir_features import NotADischarge, discharge_features, readmitted_within, stay

AS_OF = date(2026, 11, 27)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([], 0),
        (["I10"], 0),  # hypertension is not a Charlson condition
        (["E11.9"], 1),
        (["e119"], 1),  # dots and case do not matter
        (["E11.22", "E11.9"], 2),  # with complications supersedes without
        (["I50.9", "N18.3", "J44.9", "E11.9"], 1 + 2 + 1 + 1),
        (["C34.1", "C78.0"], 6),  # metastatic supersedes the primary malignancy
        (["K70.30", "K72.10"], 3),  # severe liver disease supersedes mild
        (["I21.4", "I25.2", "G30.9", "B20"], 1 + 1 + 6),  # one MI counted once
    ],
)
def test_charlson_index(codes: list[str], expected: int) -> None:
    assert charlson.index(codes) == expected


def test_every_category_is_reached_by_a_code_of_its_own() -> None:
    sample = {
        "myocardial_infarction": "I21.9",
        "heart_failure": "I50.22",
        "peripheral_vascular": "I70.209",
        "cerebrovascular": "I63.9",
        "dementia": "G30.1",
        "chronic_pulmonary": "J44.1",
        "rheumatic": "M06.9",
        "peptic_ulcer": "K25.7",
        "mild_liver": "K74.60",
        "diabetes": "E10.9",
        "diabetes_complicated": "E11.40",
        "hemiplegia": "G81.90",
        "renal": "N18.6",
        "malignancy": "C50.911",
        "severe_liver": "I85.00",
        "metastatic": "C79.51",
        "hiv": "B20",
    }
    assert {cat.name for cat in charlson.CATEGORIES} == set(sample)
    for name, code in sample.items():
        assert charlson.categories([code]) == {name}, code


def resources(seed: int, index: int) -> dict[str, list[dict]]:
    _, bundle = patient_bundle(seed, index, AS_OF)
    out: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        r = dict(entry["resource"], id=entry["fullUrl"])
        out.setdefault(r["resourceType"], []).append(r)
    return out


def admitted(seed: int = 7) -> dict[str, list[dict]]:
    for index in range(60):
        found = resources(seed, index)
        if [e for e in found.get("Encounter", []) if e["class"]["code"] == "IMP"]:
            return found
    raise AssertionError("no admitted patient in the first 60")


def test_a_discharge_from_the_synthetic_ehr() -> None:
    r = admitted()
    inpatient = sorted(
        (e for e in r["Encounter"] if e["class"]["code"] == "IMP"), key=lambda e: e["period"]["end"]
    )
    last = inpatient[-1]
    f = discharge_features(last, r["Patient"][0], r.get("Condition", []), r["Encounter"],
                           r.get("Observation", []), r.get("MedicationRequest", []))  # fmt: skip
    start, end = stay(last)
    assert f.los_days == last["length"]["value"] == (end.date() - start.date()).days
    assert f.emergent  # the synthetic EHR admits through the ED
    assert f.disposition == Disposition.of(
        last["hospitalization"]["dischargeDisposition"]["coding"][0]["code"]
    )
    born = date.fromisoformat(r["Patient"][0]["birthDate"])
    assert abs(f.age - (end.date() - born).days / 365.25) < 1
    icd = [
        cd["code"] for c in r.get("Condition", []) for cd in c["code"]["coding"] if "icd-10" in cd["system"]
    ]
    assert f.charlson <= charlson.index(icd)  # only what was known by discharge
    assert f.admissions_12m == sum(
        1 for e in inpatient[:-1]
        if 0 <= (start - datetime.fromisoformat(e["period"]["start"])).days < 365
    )  # fmt: skip
    labs_in_stay = [
        o for o in r.get("Observation", [])
        if start <= datetime.fromisoformat(o.get("effectiveDateTime", "1900-01-01T00:00:00+00:00")) <= end
        and o["code"]["coding"][0]["code"] in ("718-7", "2951-2", "2160-0")
    ]  # fmt: skip
    assert (f.hemoglobin, f.sodium, f.creatinine) != (None, None, None) or not labs_in_stay


def test_an_encounter_that_is_not_a_discharge_is_refused() -> None:
    r = admitted()
    ambulatory = next(e for e in r["Encounter"] if e["class"]["code"] == "AMB")
    with pytest.raises(NotADischarge):
        discharge_features(ambulatory, r["Patient"][0], [], [], [], [])
    ongoing = dict(next(e for e in r["Encounter"] if e["class"]["code"] == "IMP"), status="in-progress")
    with pytest.raises(NotADischarge):
        discharge_features(ongoing, r["Patient"][0], [], [], [], [])


def test_readmitted_means_another_inpatient_stay_within_30_days() -> None:
    def enc(eid: str, klass: str, start: str) -> dict[str, object]:
        return {"id": eid, "class": {"code": klass}, "period": {"start": start}}

    out = datetime.fromisoformat("2026-10-01T12:00:00+00:00")
    stays = [enc("index", "IMP", "2026-09-25T08:00:00Z"), enc("clinic", "AMB", "2026-10-05T09:00:00Z")]
    assert not readmitted_within("index", out, stays)  # itself and a clinic visit do not count
    assert readmitted_within("index", out, [*stays, enc("back", "IMP", "2026-10-31T12:00:00Z")])
    assert not readmitted_within("index", out, [*stays, enc("late", "IMP", "2026-10-31T12:00:01Z")])
    assert not readmitted_within("index", out, [*stays, enc("before", "IMP", "2026-09-01T00:00:00Z")])

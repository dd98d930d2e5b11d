"""The features a readmission score uses (minimum necessary: no names, no free text), and LACE.

LACE (van Walraven et al., CMAJ 2010) is the clinical baseline every model is compared with:
L length of stay, A acuity of the admission (emergent), C Charlson comorbidity index, E emergency
department visits in the previous 6 months; 0-19 points, >= 10 is the usual "high risk" cut.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Disposition(StrEnum):
    """Where the patient went at discharge: HL7's discharge-disposition codes
    (Encounter.hospitalization.dischargeDisposition); any other code is OTHER."""

    HOME = "home"
    SKILLED_NURSING = "snf"
    REHAB = "rehab"
    HOSPICE = "hosp"
    AGAINST_ADVICE = "aadvice"  # left against medical advice
    OTHER = "oth"

    @classmethod
    def of(cls, code: str | None) -> Disposition:
        try:
            return cls(code or "oth")
        except ValueError:
            return cls.OTHER

    @property
    def code(self) -> int:
        return list(Disposition).index(self)


class DischargeFeatures(BaseModel):
    """One discharge, as the model sees it."""

    age: float = Field(ge=0, le=120)
    charlson: int = Field(ge=0, le=37)  # Charlson comorbidity index from the ICD-10 diagnoses
    los_days: float = Field(ge=0)
    emergent: bool  # admitted through the ED / as an emergency (LACE's A)
    admissions_12m: int = Field(ge=0)  # inpatient admissions in the 12 months before this one
    ed_visits_6m: int = Field(ge=0)  # ED visits in the 6 months before this admission
    disposition: Disposition
    hemoglobin: float | None = None  # g/dL, last value of the stay
    sodium: float | None = None  # mmol/L
    creatinine: float | None = None  # mg/dL
    active_medications: int = Field(0, ge=0)


# The model's columns, in order.  Missing labs stay NaN: gradient boosting learns what missing means.
FEATURES: tuple[str, ...] = (
    "age",
    "charlson",
    "los_days",
    "emergent",
    "admissions_12m",
    "ed_visits_6m",
    "disposition",
    "hemoglobin",
    "sodium",
    "creatinine",
    "active_medications",
)
CATEGORICAL: tuple[str, ...] = ("disposition",)

# What a factor means to a care-coordination nurse (explanations name these, never column names).
LABELS: dict[str, str] = {
    "age": "age",
    "charlson": "comorbidity burden (Charlson index)",
    "los_days": "length of stay",
    "emergent": "emergency admission",
    "admissions_12m": "admissions in the prior 12 months",
    "ed_visits_6m": "ED visits in the prior 6 months",
    "disposition": "discharge disposition",
    "hemoglobin": "last hemoglobin",
    "sodium": "last sodium",
    "creatinine": "last creatinine",
    "active_medications": "number of active medications",
}


def row(f: DischargeFeatures) -> list[float]:
    """The model's input row (NaN for a missing lab)."""
    nan = float("nan")
    return [
        f.age,
        float(f.charlson),
        f.los_days,
        float(f.emergent),
        float(f.admissions_12m),
        float(f.ed_visits_6m),
        float(f.disposition.code),
        nan if f.hemoglobin is None else f.hemoglobin,
        nan if f.sodium is None else f.sodium,
        nan if f.creatinine is None else f.creatinine,
        float(f.active_medications),
    ]


def describe(feature: str, value: float | None) -> str:
    """A feature's value as a care-coordination nurse reads it ("snf", "yes", "3", "128.0")."""
    if value is None or value != value:  # NaN: not measured during the stay
        return "not measured"
    if feature == "disposition":
        return list(Disposition)[int(value)].value
    if feature == "emergent":
        return "yes" if value else "no"
    if feature == "los_days":
        return f"{value:g} days"
    return f"{value:g}"


def lace_points(los_days: float, emergent: bool, charlson: int, ed_visits_6m: int) -> int:
    """LACE index, 0-19."""
    days = int(los_days)
    if days < 1:
        length = 0
    elif days <= 3:
        length = days
    elif days <= 6:
        length = 4
    elif days <= 13:
        length = 5
    else:
        length = 7
    comorbidity = charlson if charlson <= 3 else 5
    return length + (3 if emergent else 0) + comorbidity + min(ed_visits_6m, 4)


def lace(f: DischargeFeatures) -> int:
    return lace_points(f.los_days, f.emergent, f.charlson, f.ed_visits_6m)

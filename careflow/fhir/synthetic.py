"""Deterministic, clinically coherent synthetic EHR as FHIR R4 transaction Bundles.

`generate(seed, patients, as_of)` is a pure function: the same arguments give byte-identical Bundles
(no clock, no global random state; every patient has its own generators seeded from (seed, index), so
patient k is the same whatever the patient count).  `as_of` is the reference date: all history ends
before its midnight (UTC).

Bundles: one with the staff (Practitioner + PractitionerRole) and organizations (hospital, payers),
then one per patient.  Every entry is a conditional create (`ifNoneExist` on careflow's synthetic
identifier), so loading the same seed twice creates nothing twice; fullUrls are `urn:uuid:` uuid5s of
(seed, key).  A patient Bundle repeats, as conditional creates, the practitioners and organizations it
references, so each Bundle resolves on its own (the server maps them to the existing resources).

Coherence: each patient has a profile of chronic conditions; labs follow it (CKD raises the creatinine
baseline, diabetes the HbA1c and glucose, heart failure lowers sodium, COPD the SpO2, ...), medications
follow the conditions they treat (`codes.INDICATIONS`; no NSAID in CKD), and dates are ordered: birth <
onset < encounters < now, admissions end with a discharge, every observation falls inside its encounter.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

from faker import Faker

from careflow.fhir import codes as c

Resource = dict[str, Any]
Bundle = dict[str, Any]

# Fixed namespace of careflow's synthetic fullUrls.
NAMESPACE = uuid.UUID("6a1f3c52-2b7e-5d0a-9a43-0ca4ef10c0de")
HISTORY_DAYS = 3 * 365

STAFF_ROSTER: tuple[tuple[str, int], ...] = (
    ("hospitalist", 4),
    ("primary-care", 3),
    ("orthopedic-surgeon", 1),
    ("pa-staff", 3),
    ("pa-supervisor", 1),
    ("charge-nurse", 2),
    ("department-chief", 2),
)
_SPECIALTY = {
    "hospitalist": ("419192003", "Internal medicine"),
    "primary-care": ("419772000", "Family practice"),
    "orthopedic-surgeon": ("394801008", "Trauma and orthopedics"),
    "department-chief-1": ("419192003", "Internal medicine"),
    "department-chief-2": ("394609007", "General surgery"),
}
_PHYSICIANS = {"hospitalist", "primary-care", "orthopedic-surgeon", "department-chief"}
HOSPITAL_KEY = "org.hospital"
HOSPITAL_NAME = "Careflow General Hospital"


@dataclass(frozen=True)
class PatientProfile:
    """What a patient was generated to have; tests check the Bundle against it."""

    index: int
    mrn: str
    patient_url: str
    sex: str
    birth_date: date
    conditions: tuple[str, ...]  # chronic condition keys (codes.CONDITIONS)
    admissions: int
    prior_auth_orders: tuple[str, ...]
    payer: str


@dataclass
class SyntheticEhr:
    bundles: list[Bundle]
    profiles: list[PatientProfile]


# -- helpers --------------------------------------------------------------------------------------
def full_url(seed: int, key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{seed}/{key}')}"


def _iso(ts: datetime) -> str:
    return ts.replace(microsecond=0).isoformat()


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)], "text": text or display}


def _ref(url: str) -> dict[str, str]:
    return {"reference": url}


def _npi(rng: random.Random) -> str:
    """A 10-digit NPI with a valid Luhn check digit (computed with the 80840 prefix)."""
    base = str(rng.choice((1, 2))) + "".join(str(rng.randint(0, 9)) for _ in range(8))
    total = 0
    for i, ch in enumerate(reversed("80840" + base)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return base + str((10 - total % 10) % 10)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


@lru_cache(maxsize=1)
def _faker() -> Faker:
    return Faker("en_US")


class _BundleBuilder:
    """Collects transaction entries; every resource gets the synthetic identifier and tag."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.entries: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def add(self, key: str, resource: Resource) -> str:
        url = full_url(self.seed, key)
        if url in self._seen:
            return url
        self._seen.add(url)
        value = f"{self.seed}.{key}"
        resource.setdefault("identifier", []).append({"system": c.SYNTHETIC_ID, "value": value})
        resource["meta"] = {"tag": [_coding(c.TAG_SYSTEM, c.TAG_SYNTHETIC, "Synthetic data")]}
        rtype = resource["resourceType"]
        self.entries.append(
            {
                "fullUrl": url,
                "resource": resource,
                "request": {
                    "method": "POST",
                    "url": rtype,
                    "ifNoneExist": f"identifier={c.SYNTHETIC_ID}|{value}",
                },
            }
        )
        return url

    def bundle(self) -> Bundle:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


# -- staff and organizations ----------------------------------------------------------------------
@dataclass(frozen=True)
class StaffMember:
    key: str  # e.g. "hospitalist-2"
    role: str
    practitioner: Resource
    role_resource: Resource


def _organization(key: str) -> Resource:
    if key == HOSPITAL_KEY:
        return {
            "resourceType": "Organization",
            "active": True,
            "type": [_concept(c.ORGANIZATION_TYPE, "prov", "Healthcare Provider")],
            "name": HOSPITAL_NAME,
        }
    payer = c.PAYERS[key.removeprefix("org.payer.")]
    return {
        "resourceType": "Organization",
        "active": True,
        "type": [_concept(c.ORGANIZATION_TYPE, "pay", "Payer")],
        "name": payer.name,
    }


@lru_cache(maxsize=8)
def _staff(seed: int) -> tuple[StaffMember, ...]:
    # A Faker of its own: the shared one is seeded per patient, and this runs (once) in the middle of
    # the first patient of a process, which then got other names than in every later call.
    fake = Faker("en_US")
    fake.seed_instance(f"{seed}:staff")
    rng = random.Random(f"{seed}:staff")  # noqa: S311 - synthetic data, reproducible by design
    hospital = full_url(seed, HOSPITAL_KEY)
    members: list[StaffMember] = []
    for role, count in STAFF_ROSTER:
        for n in range(1, count + 1):
            key = f"{role}-{n}"
            female = rng.random() < 0.5
            first = fake.first_name_female() if female else fake.first_name_male()
            name: dict[str, Any] = {"use": "official", "family": fake.last_name(), "given": [first]}
            if role in _PHYSICIANS:
                name["prefix"] = ["Dr."]
            practitioner: Resource = {
                "resourceType": "Practitioner",
                "identifier": [
                    {"system": c.NPI, "value": _npi(rng)},
                    {"system": c.PRACTITIONER_ID, "value": key},
                ],
                "active": True,
                "name": [name],
                "gender": "female" if female else "male",
            }
            specialty = _SPECIALTY.get(key) or _SPECIALTY.get(role)
            role_resource: Resource = {
                "resourceType": "PractitionerRole",
                "active": True,
                "practitioner": _ref(full_url(seed, f"practitioner.{key}")),
                "organization": _ref(hospital),
                "code": [_concept(c.ROLE_SYSTEM, role, c.ROLES[role])],
            }
            if specialty:
                role_resource["specialty"] = [_concept(c.SNOMED, *specialty)]
            members.append(StaffMember(key, role, practitioner, role_resource))
    return tuple(members)


def _copy(resource: Resource) -> Resource:
    # The builder appends identifiers in place, so each Bundle gets its own copy of a cached resource.
    return copy.deepcopy(resource)


def staff_bundle(seed: int) -> Bundle:
    """Hospital, payers, every practitioner and their roles."""
    b = _BundleBuilder(seed)
    b.add(HOSPITAL_KEY, _organization(HOSPITAL_KEY))
    for payer in c.PAYERS:
        b.add(f"org.payer.{payer}", _organization(f"org.payer.{payer}"))
    for m in _staff(seed):
        b.add(f"practitioner.{m.key}", _copy(m.practitioner))
    for m in _staff(seed):
        b.add(f"role.{m.key}", _copy(m.role_resource))
    return b.bundle()


def staff_keys(seed: int, role: str) -> list[str]:
    return [m.key for m in _staff(seed) if m.role == role]


# -- the patient's clinical story -----------------------------------------------------------------
@dataclass
class _Story:
    """Per-patient baselines the labs, vitals and medications are drawn from."""

    sex: str
    age: int
    conditions: list[str]
    creatinine: float
    hba1c: float
    sbp: float
    onset: dict[str, date] = field(default_factory=dict)


def _choose_conditions(rng: random.Random, age: int) -> list[str]:
    older = age >= 60
    has: list[str] = []

    def maybe(key: str, p: float) -> None:
        if rng.random() < p:
            has.append(key)

    maybe("hypertension", 0.55 if older else 0.25)
    maybe("diabetes", 0.35 if older else 0.18)
    maybe("obesity", 0.3)
    maybe("hyperlipidemia", 0.45 if older else 0.2)
    ckd_p = 0.08 + 0.25 * ("diabetes" in has) + 0.12 * ("hypertension" in has) + 0.1 * older
    if age >= 40:
        maybe("ckd3", ckd_p)
    if age >= 50:
        maybe("heart_failure", 0.2 if older else 0.06)
        maybe("copd", 0.14)
        maybe("knee_oa", 0.2)
    if age >= 60:
        maybe("afib", 0.14)
    maybe("rheumatoid_arthritis", 0.07)
    maybe("low_back_pain", 0.14)
    return has


def _story(rng: random.Random, sex: str, age: int) -> _Story:
    conditions = _choose_conditions(rng, age)
    normal_creat = rng.gauss(0.9, 0.1) if sex == "male" else rng.gauss(0.75, 0.08)
    creat = rng.uniform(1.6, 2.5) if "ckd3" in conditions else normal_creat
    hba1c = rng.uniform(7.0, 9.8) if "diabetes" in conditions else rng.gauss(5.2, 0.2)
    sbp = rng.gauss(146, 8) if "hypertension" in conditions else rng.gauss(119, 7)
    return _Story(sex, age, conditions, creat, hba1c, sbp)


def _lab_value(
    key: str, st: _Story, rng: random.Random, years_in: float, acute: str | None, day: int
) -> float:
    """A value for one lab on one occasion; `acute` is the admission reason while inpatient."""
    diab = "diabetes" in st.conditions
    ckd = "ckd3" in st.conditions
    if key == "creatinine":
        v = st.creatinine * (1 + (0.04 if ckd else 0.0) * years_in) + rng.gauss(0, 0.05)
        if acute in ("aki", "sepsis"):
            v *= max(1.0, 1.9 - 0.25 * day)  # acute kidney injury, recovering over the stay
    elif key == "potassium":
        v = rng.gauss(4.8 if ckd else 4.2, 0.25)
        if acute == "aki":
            v += 0.5
    elif key == "sodium":
        v = rng.gauss(135 if "heart_failure" in st.conditions else 139.5, 1.8)
    elif key == "hemoglobin":
        base = 11.0 if ckd else (14.6 if st.sex == "male" else 13.2)
        v = rng.gauss(base, 0.6)
    elif key == "troponin_i":
        v = rng.uniform(0.05, 0.4) if acute == "chest_pain" and rng.random() < 0.5 else rng.uniform(0.0, 0.02)
        if acute == "heart_failure":
            v = rng.uniform(0.02, 0.08)
    elif key == "lactate":
        v = rng.uniform(2.8, 5.0) if acute == "sepsis" else rng.gauss(1.2, 0.25)
    elif key == "glucose":
        v = rng.gauss(28.7 * st.hba1c - 46.7, 18) if diab else rng.gauss(90, 7)  # ADAG: eAG from HbA1c
    elif key == "hba1c":
        v = st.hba1c - (0.15 * years_in if diab else 0) + rng.gauss(0, 0.15)
    elif key == "wbc":
        v = rng.uniform(13.0, 21.0) if acute in ("sepsis", "pneumonia") and day < 3 else rng.gauss(7.0, 1.2)
    elif key == "heart_rate":
        v = rng.gauss(104 if acute in ("sepsis", "pneumonia") and day < 2 else 76, 6)
    elif key == "temperature":
        v = rng.gauss(38.6, 0.3) if acute in ("sepsis", "pneumonia") and day < 2 else rng.gauss(36.8, 0.2)
    elif key == "spo2":
        v = min(100.0, rng.gauss(91.5 if "copd" in st.conditions else 97.5, 1.2))
        if acute == "copd_exacerbation" and day < 2:
            v -= 4
    elif key == "resp_rate":
        v = rng.gauss(24 if acute in ("copd_exacerbation", "pneumonia") and day < 2 else 16, 1.5)
    elif key == "systolic":
        v = rng.gauss(st.sbp, 6)
    elif key == "diastolic":
        v = rng.gauss(st.sbp * 0.6, 4)
    else:  # pragma: no cover - every key in codes.LABS is handled above
        raise KeyError(key)
    return max(v, 0.0)


def _quantity(lab: c.Lab, value: float) -> dict[str, Any]:
    rounded: float | int = round(value, lab.decimals) if lab.decimals else round(value)
    return {"value": rounded, "unit": lab.unit, "system": c.UCUM, "code": lab.unit}


def _reference_range(lab: c.Lab, sex: str) -> tuple[float | None, float | None]:
    return c.SEX_RANGES.get((lab.key, sex), (lab.low, lab.high))


def _interpretation(value: float, low: float | None, high: float | None) -> dict[str, Any]:
    if high is not None and value > high:
        return _concept(c.V3_INTERPRETATION, "H", "High")
    if low is not None and value < low:
        return _concept(c.V3_INTERPRETATION, "L", "Low")
    return _concept(c.V3_INTERPRETATION, "N", "Normal")


def _range_json(lab: c.Lab, low: float | None, high: float | None) -> list[dict[str, Any]]:
    rng: dict[str, Any] = {}
    if low is not None:
        rng["low"] = _quantity(lab, low)
    if high is not None:
        rng["high"] = _quantity(lab, high)
    return [rng]


# -- patient bundle -------------------------------------------------------------------------------
class _PatientWriter:
    def __init__(self, seed: int, index: int, as_of: date) -> None:
        self.seed = seed
        self.index = index
        self.now = datetime.combine(as_of, time(), UTC)
        self.rng = random.Random(f"{seed}:{index}")  # noqa: S311 - synthetic data, reproducible by design
        self.b = _BundleBuilder(seed)
        self.key = f"p{index}"
        self.counter = 0

    def k(self, kind: str) -> str:
        self.counter += 1
        return f"{self.key}.{kind}.{self.counter}"

    def staff(self, key: str) -> str:
        member = next(m for m in _staff(self.seed) if m.key == key)
        return self.b.add(f"practitioner.{member.key}", _copy(member.practitioner))

    def org(self, key: str) -> str:
        return self.b.add(key, _organization(key))


def _patient_resource(fake: Faker, rng: random.Random, sex: str, birth: date, mrn: str) -> Resource:
    first = fake.first_name_female() if sex == "female" else fake.first_name_male()
    given = [first, fake.first_name_female() if sex == "female" else fake.first_name_male()]
    return {
        "resourceType": "Patient",
        "identifier": [
            {
                "use": "usual",
                "type": _concept(c.V2_0203, "MR", "Medical record number"),
                "system": c.MRN,
                "value": mrn,
            }
        ],
        "active": True,
        "name": [{"use": "official", "family": fake.last_name(), "given": given}],
        "telecom": [
            {"system": "phone", "value": f"({rng.randint(201, 989)}) 555-01{rng.randint(0, 99):02d}"}
        ],
        "gender": sex,
        "birthDate": birth.isoformat(),
        "address": [
            {
                "use": "home",
                "line": [fake.street_address()],
                "city": fake.city(),
                "state": fake.state_abbr(include_territories=False),
                "postalCode": fake.zipcode(),
                "country": "US",
            }
        ],
    }


def _payer_for(rng: random.Random, age: int) -> str:
    if age >= 65:
        return "medicare" if rng.random() < 0.7 else "humana-ma"
    if rng.random() < 0.18:
        return "medicaid"
    return rng.choice(("aetna", "unitedhealthcare", "bcbs", "cigna"))


def _condition(
    w: _PatientWriter, patient: str, key: str, onset: datetime, *, acute_end: datetime | None
) -> str:
    code = c.CONDITIONS[key]
    category = "encounter-diagnosis" if acute_end else "problem-list-item"
    resource: Resource = {
        "resourceType": "Condition",
        "clinicalStatus": _concept(
            c.CONDITION_CLINICAL, "resolved" if acute_end else "active", "Resolved" if acute_end else "Active"
        ),
        "verificationStatus": _concept(c.CONDITION_VERIFICATION, "confirmed", "Confirmed"),
        "category": [_concept(c.CONDITION_CATEGORY, category, category.replace("-", " ").title())],
        "code": {
            "coding": [
                _coding(c.ICD10CM, code.icd10, code.icd10_display),
                _coding(c.SNOMED, code.snomed, code.snomed_display),
            ],
            "text": code.icd10_display,
        },
        "subject": _ref(patient),
        "onsetDateTime": _iso(onset),
        "recordedDate": _iso(onset),
    }
    if acute_end:
        resource["abatementDateTime"] = _iso(acute_end)
    return w.b.add(w.k(f"cond.{key}"), resource)


@dataclass
class _Admission:
    start: datetime
    end: datetime
    reason: str
    disposition: str


def _plan_admissions(w: _PatientWriter, st: _Story, history_start: datetime) -> list[_Admission]:
    rng = w.rng
    risk = len(st.conditions)
    count = (
        0
        if risk == 0 and rng.random() < 0.8
        else rng.choice((0, 1, 1, 2))
        if risk < 3
        else rng.choice((1, 2))
    )
    reasons = [
        r
        for cond, r in (
            ("heart_failure", "heart_failure"),
            ("copd", "copd_exacerbation"),
            ("ckd3", "aki"),
            ("diabetes", "aki"),
            ("hypertension", "chest_pain"),
        )
        if cond in st.conditions
    ] + ["pneumonia", "sepsis", "chest_pain"]
    admissions: list[_Admission] = []
    # A share of admitted patients was discharged in the 24 h before `as_of` (nightly risk scoring).
    recent = count > 0 and rng.random() < 0.35
    ends: list[datetime] = []
    for i in range(count):
        los = rng.randint(2, 8)
        if recent and i == 0:
            end = w.now - timedelta(hours=rng.randint(2, 22))
            start = (end - timedelta(days=los)).replace(
                hour=rng.randint(0, 23), minute=rng.choice((5, 20, 40))
            )
        else:
            offset = rng.randint(30, HISTORY_DAYS - 30)
            start = history_start + timedelta(
                days=offset, hours=rng.randint(0, 23), minutes=rng.choice((0, 15, 45))
            )
            end = (start + timedelta(days=los)).replace(hour=rng.randint(10, 16), minute=rng.choice((0, 30)))
        if end >= w.now or any(abs((start - e).days) < 20 for e in ends):
            continue  # keep stays apart and in the past
        ends.append(end)
        disposition = rng.choices(list(c.DISPOSITIONS), weights=(70, 12, 10, 4, 4))[0]
        admissions.append(_Admission(start, end, rng.choice(reasons), disposition))
    return sorted(admissions, key=lambda a: a.start)


def patient_bundle(seed: int, index: int, as_of: date) -> tuple[PatientProfile, Bundle]:
    """One patient's transaction Bundle and the profile it was generated from."""
    w = _PatientWriter(seed, index, as_of)
    rng = w.rng
    fake = _faker()
    fake.seed_instance(f"{seed}:{index}")

    sex = rng.choice(("female", "male"))
    age = rng.randint(25, 90)
    birth = _years_before(as_of, age) - timedelta(days=rng.randint(1, 364))
    st = _story(rng, sex, age)
    mrn = f"SYN{seed}-{index:06d}"
    history_start = w.now - timedelta(days=HISTORY_DAYS)

    hospital = w.org(HOSPITAL_KEY)
    pcp_key = rng.choice(staff_keys(seed, "primary-care"))
    pcp = w.staff(pcp_key)
    patient_res = _patient_resource(fake, rng, sex, birth, mrn)
    patient_res["generalPractitioner"] = [_ref(pcp)]
    patient_res["managingOrganization"] = _ref(hospital)
    patient = w.b.add(f"{w.key}.patient", patient_res)

    payer = _payer_for(rng, age)
    payer_url = w.org(f"org.payer.{payer}")
    cov_start = max(birth + timedelta(days=1), (history_start - timedelta(days=rng.randint(0, 900))).date())
    coverage = w.b.add(
        f"{w.key}.coverage",
        {
            "resourceType": "Coverage",
            "identifier": [{"system": c.MEMBER_ID, "value": fake.bothify("??#########").upper()}],
            "status": "active",
            "type": _concept(c.SOPT, c.PAYERS[payer].sopt, c.PAYERS[payer].sopt_display),
            "subscriberId": fake.bothify("#########"),
            "beneficiary": _ref(patient),
            "relationship": _concept(c.SUBSCRIBER_RELATIONSHIP, "self", "Self"),
            "period": {"start": cov_start.isoformat()},
            "payor": [_ref(payer_url)],
        },
    )

    # Chronic conditions: onset after age 18 and before the history window opens.
    adult = datetime.combine(_years_before(birth, -18), time(9), UTC)
    chronic: dict[str, str] = {}
    for key in st.conditions:
        lo = max(adult, history_start - timedelta(days=15 * 365))
        span = max(1, (history_start - lo).days)
        onset = (lo + timedelta(days=rng.randint(0, span))).replace(hour=9)
        onset = min(onset, history_start)
        st.onset[key] = onset.date()
        chronic[key] = _condition(w, patient, key, onset, acute_end=None)

    _allergies(w, patient, history_start)

    admissions = _plan_admissions(w, st, history_start)
    outpatient_days = _outpatient_schedule(w, st, history_start, admissions)
    last_visit: str | None = None
    for day in outpatient_days:
        last_visit = _outpatient_visit(w, st, patient, pcp, hospital, chronic, day, history_start)
    for adm in admissions:
        _inpatient_stay(w, st, patient, hospital, chronic, adm, history_start)
    _once_procedures(w, st, patient)
    meds = _medications(w, st, patient, pcp, chronic)
    orders = _prior_auth_orders(w, st, patient, pcp, chronic, coverage, last_visit, meds)

    profile = PatientProfile(
        index=index,
        mrn=mrn,
        patient_url=patient,
        sex=sex,
        birth_date=birth,
        conditions=tuple(st.conditions),
        admissions=len(admissions),
        prior_auth_orders=tuple(orders),
        payer=payer,
    )
    return profile, w.b.bundle()


def _allergies(w: _PatientWriter, patient: str, history_start: datetime) -> None:
    rng = w.rng
    count = 0 if rng.random() < 0.7 else (1 if rng.random() < 0.8 else 2)
    for allergen in rng.sample(sorted(c.ALLERGENS), count):
        code, display, category = c.ALLERGENS[allergen]
        reaction = rng.choice(sorted(c.REACTIONS))
        recorded = history_start + timedelta(days=rng.randint(0, 300))
        w.b.add(
            w.k(f"allergy.{allergen}"),
            {
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": _concept(c.ALLERGY_CLINICAL, "active", "Active"),
                "verificationStatus": _concept(c.ALLERGY_VERIFICATION, "confirmed", "Confirmed"),
                "type": "allergy",
                "category": [category],
                "criticality": "high" if reaction == "anaphylaxis" else "low",
                "code": _concept(c.SNOMED, code, display),
                "patient": _ref(patient),
                "recordedDate": _iso(recorded),
                "reaction": [{"manifestation": [_concept(c.SNOMED, *c.REACTIONS[reaction])]}],
            },
        )


def _outpatient_schedule(
    w: _PatientWriter, st: _Story, history_start: datetime, admissions: list[_Admission]
) -> list[datetime]:
    rng = w.rng
    gap = (90, 150) if st.conditions else (300, 400)
    days: list[datetime] = []
    t = history_start + timedelta(days=rng.randint(5, gap[0]))
    while t < w.now - timedelta(days=2):
        visit = t.replace(hour=rng.randint(8, 15), minute=rng.choice((0, 20, 40)))
        clash = any(a.start - timedelta(days=2) <= visit <= a.end + timedelta(days=2) for a in admissions)
        if not clash:
            days.append(visit)
        t += timedelta(days=rng.randint(*gap))
    return days


def _encounter(
    w: _PatientWriter,
    patient: str,
    hospital: str,
    practitioner: str,
    start: datetime,
    end: datetime,
    reasons: list[str],
    inpatient: _Admission | None,
) -> str:
    resource: Resource = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": _coding(c.V3_ACT, "IMP", "inpatient encounter")
        if inpatient
        else _coding(c.V3_ACT, "AMB", "ambulatory"),
        "type": [
            _concept(c.SNOMED, "32485007", "Hospital admission")
            if inpatient
            else _concept(c.SNOMED, "390906007", "Follow-up encounter")
        ],
        "subject": _ref(patient),
        "participant": [
            {
                "type": [_concept(c.V3_PARTICIPATION, "ATND", "attender")],
                "individual": _ref(practitioner),
            }
        ],
        "period": {"start": _iso(start), "end": _iso(end)},
        "serviceProvider": _ref(hospital),
    }
    if reasons:
        resource["reasonReference"] = [_ref(r) for r in reasons]
    if inpatient:
        resource["length"] = {
            "value": (end.date() - start.date()).days,
            "unit": "days",
            "system": c.UCUM,
            "code": "d",
        }
        resource["diagnosis"] = [
            {
                "condition": _ref(reasons[0]),
                "use": _concept(
                    "http://terminology.hl7.org/CodeSystem/diagnosis-role", "DD", "Discharge diagnosis"
                ),
                "rank": 1,
            }
        ]
        resource["hospitalization"] = {
            "admitSource": _concept(c.ADMIT_SOURCE, "emd", "From accident/emergency department"),
            "dischargeDisposition": _concept(
                c.DISCHARGE_DISPOSITION, inpatient.disposition, c.DISPOSITIONS[inpatient.disposition]
            ),
        }
    return w.b.add(w.k("enc.imp" if inpatient else "enc.amb"), resource)


def _observe(
    w: _PatientWriter,
    st: _Story,
    patient: str,
    encounter: str,
    when: datetime,
    keys: tuple[str, ...],
    history_start: datetime,
    acute: str | None = None,
    day: int = 0,
) -> None:
    years_in = (when - history_start).days / 365.0
    for key in keys:
        lab = c.LABS[key]
        low, high = _reference_range(lab, st.sex)
        value = float(_quantity(lab, _lab_value(key, st, w.rng, years_in, acute, day))["value"])
        w.b.add(
            w.k(f"obs.{key}"),
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [
                    _concept(c.OBSERVATION_CATEGORY, lab.category, lab.category.replace("-", " ").title())
                ],
                "code": _concept(c.LOINC, lab.loinc, lab.display),
                "subject": _ref(patient),
                "encounter": _ref(encounter),
                "effectiveDateTime": _iso(when),
                "valueQuantity": _quantity(lab, value),
                "referenceRange": _range_json(lab, low, high),
                "interpretation": [_interpretation(value, low, high)],
            },
        )


def _blood_pressure(
    w: _PatientWriter, st: _Story, patient: str, encounter: str, when: datetime, history_start: datetime
) -> None:
    components = []
    for key in ("systolic", "diastolic"):
        lab = c.LABS[key]
        value = float(_quantity(lab, _lab_value(key, st, w.rng, 0.0, None, 0))["value"])
        components.append(
            {
                "code": _concept(c.LOINC, lab.loinc, lab.display),
                "valueQuantity": _quantity(lab, value),
                "referenceRange": _range_json(lab, lab.low, lab.high),
                "interpretation": [_interpretation(value, lab.low, lab.high)],
            }
        )
    w.b.add(
        w.k("obs.bp"),
        {
            "resourceType": "Observation",
            "status": "final",
            "category": [_concept(c.OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")],
            "code": _concept(c.LOINC, *c.BLOOD_PRESSURE_PANEL),
            "subject": _ref(patient),
            "encounter": _ref(encounter),
            "effectiveDateTime": _iso(when),
            "component": components,
        },
    )


VITALS = ("heart_rate", "temperature", "spo2", "resp_rate")
BMP = ("creatinine", "potassium", "sodium", "glucose")
CBC = ("hemoglobin", "wbc")


def _outpatient_visit(
    w: _PatientWriter,
    st: _Story,
    patient: str,
    pcp: str,
    hospital: str,
    chronic: dict[str, str],
    start: datetime,
    history_start: datetime,
) -> str:
    end = start + timedelta(minutes=30)
    reasons = [chronic[k] for k in st.conditions[:3]]
    enc = _encounter(w, patient, hospital, pcp, start, end, reasons, None)
    _observe(w, st, patient, enc, start + timedelta(minutes=5), VITALS, history_start)
    _blood_pressure(w, st, patient, enc, start + timedelta(minutes=5), history_start)
    labs: tuple[str, ...] = BMP + CBC
    if "diabetes" in st.conditions or w.rng.random() < 0.2:
        labs += ("hba1c",)
    _observe(w, st, patient, enc, start + timedelta(minutes=20), labs, history_start)
    return enc


def _inpatient_stay(
    w: _PatientWriter,
    st: _Story,
    patient: str,
    hospital: str,
    chronic: dict[str, str],
    adm: _Admission,
    history_start: datetime,
) -> None:
    hospitalist = w.staff(w.rng.choice(staff_keys(w.seed, "hospitalist")))
    if adm.reason == "heart_failure":
        reason = chronic["heart_failure"]
    else:
        reason = _condition(w, patient, adm.reason, adm.start, acute_end=adm.end)
    enc = _encounter(w, patient, hospital, hospitalist, adm.start, adm.end, [reason], adm)
    first = adm.start + timedelta(minutes=45)
    admission_labs = BMP + CBC + ("troponin_i", "lactate")
    _observe(w, st, patient, enc, first, admission_labs, history_start, adm.reason, 0)
    _observe(w, st, patient, enc, first, VITALS, history_start, adm.reason, 0)
    _blood_pressure(w, st, patient, enc, first, history_start)
    if adm.reason in ("pneumonia", "heart_failure", "copd_exacerbation"):
        _procedure(w, patient, enc, "chest_xray", first + timedelta(hours=1))
    day = 1
    while True:
        morning = (adm.start + timedelta(days=day)).replace(hour=6, minute=0)
        if morning >= adm.end:
            break
        _observe(w, st, patient, enc, morning, BMP + CBC + VITALS, history_start, adm.reason, day)
        day += 1


def _procedure(w: _PatientWriter, patient: str, encounter: str, key: str, when: datetime) -> None:
    proc = c.PROCEDURES[key]
    w.b.add(
        w.k(f"proc.{key}"),
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": _concept(proc.system, proc.code, proc.display),
            "subject": _ref(patient),
            "encounter": _ref(encounter),
            "performedDateTime": _iso(when),
        },
    )


def _once_procedures(w: _PatientWriter, st: _Story, patient: str) -> None:
    """Diagnostics done once in the window, at an outpatient visit (the encounter is the visit's)."""
    wanted = [
        p
        for cond, p in (("heart_failure", "echocardiography"), ("copd", "spirometry"), ("afib", "ecg"))
        if cond in st.conditions
    ]
    if 50 <= st.age <= 75 and w.rng.random() < 0.3:
        wanted.append("colonoscopy")
    encounters = [e for e in w.b.entries if e["resource"]["resourceType"] == "Encounter"]
    ambulatory = [e for e in encounters if e["resource"]["class"]["code"] == "AMB"]
    for proc in wanted if ambulatory else []:
        entry = w.rng.choice(ambulatory)
        start = datetime.fromisoformat(entry["resource"]["period"]["start"])
        _procedure(w, patient, entry["fullUrl"], proc, start + timedelta(minutes=10))


def _med_request(
    w: _PatientWriter,
    patient: str,
    requester: str,
    med: c.Medication,
    reasons: list[tuple[str, str]],
    authored: datetime,
    *,
    order_id: str | None = None,
    coverage: str | None = None,
    encounter: str | None = None,
) -> str:
    resource: Resource = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": _concept(c.RXNORM, med.rxnorm, med.display),
        "subject": _ref(patient),
        "authoredOn": _iso(authored),
        "requester": _ref(requester),
        "reasonCode": [
            _concept(c.ICD10CM, c.CONDITIONS[k].icd10, c.CONDITIONS[k].icd10_display) for k, _ in reasons
        ],
        "reasonReference": [_ref(url) for _, url in reasons],
        "dosageInstruction": [{"text": med.dosage}],
    }
    if encounter:
        resource["encounter"] = _ref(encounter)
    if coverage:
        resource["insurance"] = [_ref(coverage)]
    if order_id:
        resource["identifier"] = [{"system": c.ORDER_ID, "value": order_id}]
    url = w.b.add(w.k(f"medrx.{med.key}"), resource)
    if order_id:
        resource["meta"]["tag"].append(
            _coding(c.TAG_SYSTEM, c.TAG_PRIOR_AUTH, "Prior authorization required")
        )
    return url


def _chronic_meds(st: _Story) -> dict[str, list[str]]:
    """medication key -> the conditions it is prescribed for (in the patient's condition order)."""
    has = set(st.conditions)
    plan: dict[str, list[str]] = {}

    def give(med: str, cond: str) -> None:
        plan.setdefault(med, []).append(cond)

    if "diabetes" in has:
        give("metformin", "diabetes")
        if st.hba1c > 8.5:
            give("insulin_glargine", "diabetes")
        for organ in ("ckd3", "heart_failure"):
            if organ in has and "empagliflozin" not in plan:
                give("empagliflozin", "diabetes")
                give("empagliflozin", organ)  # prescribed once the organ disease is known
    if "ckd3" in has:
        give("lisinopril", "ckd3")
    if "hypertension" in has:
        give("lisinopril" if has & {"diabetes", "ckd3"} else "amlodipine", "hypertension")
    if "heart_failure" in has:
        give("furosemide", "heart_failure")
        give("carvedilol", "heart_failure")
        give("lisinopril", "heart_failure")
    if "afib" in has:
        give("apixaban", "afib")
        if "heart_failure" not in has:  # carvedilol already controls the rate
            give("metoprolol", "afib")
    if "hyperlipidemia" in has:
        give("atorvastatin", "hyperlipidemia")
    if "copd" in has:
        give("tiotropium", "copd")
        give("albuterol", "copd")
    if "rheumatoid_arthritis" in has and "ckd3" not in has:
        give("methotrexate", "rheumatoid_arthritis")
    if "knee_oa" in has:
        give("acetaminophen" if "ckd3" in has else "meloxicam", "knee_oa")
    if "low_back_pain" in has:
        give("acetaminophen", "low_back_pain")
    return plan


def _medications(
    w: _PatientWriter, st: _Story, patient: str, pcp: str, chronic: dict[str, str]
) -> dict[str, str]:
    plan = _chronic_meds(st)
    made: dict[str, str] = {}
    for med_key, conds in plan.items():
        onset = max(datetime.combine(st.onset[k], time(10), UTC) for k in conds)
        authored = onset + timedelta(days=w.rng.randint(0, 60))
        authored = min(authored, w.now - timedelta(days=1))
        reasons = [(k, chronic[k]) for k in conds]
        made[med_key] = _med_request(w, patient, pcp, c.MEDICATIONS[med_key], reasons, authored)
    return made


def _prior_auth_orders(
    w: _PatientWriter,
    st: _Story,
    patient: str,
    pcp: str,
    chronic: dict[str, str],
    coverage: str,
    last_visit: str | None,
    meds: dict[str, str],
) -> list[str]:
    """Recent orders that payers put under prior authorization, each with a careflow order id."""
    rng = w.rng
    has = set(st.conditions)
    made: list[str] = []

    def authored() -> datetime:
        return w.now - timedelta(days=rng.randint(1, 14), hours=rng.randint(1, 10))

    def order_id(kind: str) -> str:
        return f"ord-{w.seed}-{w.index}-{kind}"

    if "diabetes" in has and ("obesity" in has or st.hba1c > 8.0) and rng.random() < 0.7:
        reasons: list[tuple[str, str]] = [(k, chronic[k]) for k in ("diabetes", "obesity") if k in has]
        _med_request(
            w, patient, pcp, c.MEDICATIONS["semaglutide"], reasons, authored(),
            order_id=order_id("semaglutide"), coverage=coverage, encounter=last_visit,
        )  # fmt: skip
        made.append("semaglutide")
    if "rheumatoid_arthritis" in has and rng.random() < 0.8:
        ra = [("rheumatoid_arthritis", chronic["rheumatoid_arthritis"])]
        _med_request(
            w, patient, pcp, c.MEDICATIONS["adalimumab"], ra, authored(),
            order_id=order_id("adalimumab"), coverage=coverage, encounter=last_visit,
        )  # fmt: skip
        made.append("adalimumab")
    for service, (primary, secondary, indication) in c.PRIOR_AUTH_SERVICES.items():
        if indication not in has or rng.random() >= 0.7:
            continue
        if service == "total_knee_arthroplasty" and st.age < 50:
            continue
        requester = w.staff("orthopedic-surgeon-1") if service == "total_knee_arthroplasty" else pcp
        coding = [_coding(primary.system, primary.code, primary.display)]
        if secondary:
            coding.append(_coding(secondary.system, secondary.code, secondary.display))
        category = (
            ("387713003", "Surgical procedure")
            if service == "total_knee_arthroplasty"
            else ("363679005", "Imaging")
        )
        resource: Resource = {
            "resourceType": "ServiceRequest",
            "identifier": [{"system": c.ORDER_ID, "value": order_id(service)}],
            "status": "active",
            "intent": "order",
            "category": [_concept(c.SNOMED, *category)],
            "priority": "routine",
            "code": {"coding": coding, "text": primary.display},
            "subject": _ref(patient),
            "authoredOn": _iso(authored()),
            "requester": _ref(requester),
            "reasonCode": [
                _concept(c.ICD10CM, c.CONDITIONS[indication].icd10, c.CONDITIONS[indication].icd10_display)
            ],
            "reasonReference": [_ref(chronic[indication])],
            "insurance": [_ref(coverage)],
        }
        if last_visit:
            resource["encounter"] = _ref(last_visit)
        w.b.add(w.k(f"order.{service}"), resource)
        resource["meta"]["tag"].append(
            _coding(c.TAG_SYSTEM, c.TAG_PRIOR_AUTH, "Prior authorization required")
        )
        made.append(service)
    return made


# -- public API -----------------------------------------------------------------------------------
def iter_patients(seed: int, patients: int, as_of: date) -> Iterator[tuple[PatientProfile, Bundle]]:
    """Patient Bundles one at a time (large runs stream them instead of holding all in memory)."""
    for index in range(patients):
        yield patient_bundle(seed, index, as_of)


def generate_ehr(seed: int, patients: int, as_of: date) -> SyntheticEhr:
    bundles = [staff_bundle(seed)]
    profiles: list[PatientProfile] = []
    for profile, bundle in iter_patients(seed, patients, as_of):
        profiles.append(profile)
        bundles.append(bundle)
    return SyntheticEhr(bundles, profiles)


def generate(seed: int, patients: int, as_of: date) -> list[Bundle]:
    """The staff Bundle, then one transaction Bundle per patient."""
    return generate_ehr(seed, patients, as_of).bundles

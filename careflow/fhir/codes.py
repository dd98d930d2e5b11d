"""Terminology the synthetic EHR uses: ICD-10-CM + SNOMED CT conditions, RxNorm ingredients, LOINC labs
and vitals (UCUM units, adult reference ranges), CPT/SNOMED procedures, payers, careflow identifier
systems and practitioner role codes.  Other building blocks look codes and systems up here too."""

from __future__ import annotations

from dataclasses import dataclass

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CPT = "http://www.ama-assn.org/go/cpt"
NPI = "http://hl7.org/fhir/sid/us-npi"
SOPT = "https://nahdo.org/sopt"  # payer type (Source of Payment Typology)
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
SUBSCRIBER_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"

# careflow's own systems
CAREFLOW = "https://careflow.dev/fhir"
SYNTHETIC_ID = f"{CAREFLOW}/sid/synthetic"  # every seeded resource: the key of its conditional create
MRN = f"{CAREFLOW}/sid/mrn"
ORDER_ID = f"{CAREFLOW}/sid/order"  # orders that need prior authorization
PRACTITIONER_ID = f"{CAREFLOW}/sid/practitioner"
MEMBER_ID = f"{CAREFLOW}/sid/member-id"
ROLE_SYSTEM = f"{CAREFLOW}/CodeSystem/practitioner-role"
TAG_SYSTEM = f"{CAREFLOW}/CodeSystem/tag"
TAG_PRIOR_AUTH = "prior-auth-required"
TAG_SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class ConditionCode:
    key: str
    icd10: str
    icd10_display: str
    snomed: str
    snomed_display: str


CONDITIONS: dict[str, ConditionCode] = {
    c.key: c
    for c in (
        # chronic problems
        ConditionCode("diabetes", "E11.9", "Type 2 diabetes mellitus without complications", "44054006",
                      "Diabetes mellitus type 2"),
        ConditionCode("ckd3", "N18.30", "Chronic kidney disease, stage 3 unspecified", "433144002",
                      "Chronic kidney disease stage 3"),
        ConditionCode("hypertension", "I10", "Essential (primary) hypertension", "59621000",
                      "Essential hypertension"),
        ConditionCode("heart_failure", "I50.9", "Heart failure, unspecified", "84114007", "Heart failure"),
        ConditionCode("copd", "J44.9", "Chronic obstructive pulmonary disease, unspecified", "13645005",
                      "Chronic obstructive lung disease"),
        ConditionCode("afib", "I48.91", "Unspecified atrial fibrillation", "49436004", "Atrial fibrillation"),
        ConditionCode("hyperlipidemia", "E78.5", "Hyperlipidemia, unspecified", "55822004", "Hyperlipidemia"),
        ConditionCode("obesity", "E66.9", "Obesity, unspecified", "414916001", "Obesity"),
        ConditionCode("rheumatoid_arthritis", "M06.9", "Rheumatoid arthritis, unspecified", "69896004",
                      "Rheumatoid arthritis"),
        ConditionCode("knee_oa", "M17.11", "Unilateral primary osteoarthritis, right knee", "239873007",
                      "Osteoarthritis of knee"),
        ConditionCode("low_back_pain", "M54.50", "Low back pain, unspecified", "279039007", "Low back pain"),
        # acute reasons for admission (encounter diagnoses)
        ConditionCode("copd_exacerbation", "J44.1",
                      "Chronic obstructive pulmonary disease with (acute) exacerbation",
                      "195951007", "Acute exacerbation of chronic obstructive airways disease"),
        ConditionCode("pneumonia", "J18.9", "Pneumonia, unspecified organism", "233604007", "Pneumonia"),
        ConditionCode("sepsis", "A41.9", "Sepsis, unspecified organism", "91302008", "Sepsis"),
        ConditionCode("aki", "N17.9", "Acute kidney failure, unspecified", "14669001",
                      "Acute renal failure syndrome"),
        ConditionCode("chest_pain", "R07.9", "Chest pain, unspecified", "29857009", "Chest pain"),
    )
}  # fmt: skip

CHRONIC = (
    "diabetes",
    "ckd3",
    "hypertension",
    "heart_failure",
    "copd",
    "afib",
    "hyperlipidemia",
    "obesity",
    "rheumatoid_arthritis",
    "knee_oa",
    "low_back_pain",
)


@dataclass(frozen=True)
class Medication:
    key: str
    rxnorm: str  # RxNorm ingredient (IN) concept
    display: str
    dosage: str
    prior_auth: bool = False


MEDICATIONS: dict[str, Medication] = {
    m.key: m
    for m in (
        Medication("metformin", "6809", "metformin", "500 mg by mouth twice daily with meals"),
        Medication("insulin_glargine", "274783", "insulin glargine", "20 units subcutaneously at bedtime"),
        Medication("empagliflozin", "1545653", "empagliflozin", "10 mg by mouth once daily"),
        Medication("semaglutide", "1991302", "semaglutide", "0.25 mg subcutaneously once weekly", True),
        Medication("lisinopril", "29046", "lisinopril", "10 mg by mouth once daily"),
        Medication("amlodipine", "17767", "amlodipine", "5 mg by mouth once daily"),
        Medication("furosemide", "4603", "furosemide", "40 mg by mouth once daily"),
        Medication("carvedilol", "20352", "carvedilol", "6.25 mg by mouth twice daily"),
        Medication("apixaban", "1364430", "apixaban", "5 mg by mouth twice daily"),
        Medication("metoprolol", "6918", "metoprolol", "25 mg by mouth twice daily"),
        Medication("atorvastatin", "83367", "atorvastatin", "40 mg by mouth once daily"),
        Medication("tiotropium", "69120", "tiotropium", "18 mcg inhaled once daily"),
        Medication("albuterol", "435", "albuterol", "2 puffs inhaled every 4 hours as needed"),
        Medication("methotrexate", "6851", "methotrexate", "15 mg by mouth once weekly"),
        Medication("adalimumab", "327361", "adalimumab", "40 mg subcutaneously every other week", True),
        Medication("meloxicam", "41493", "meloxicam", "7.5 mg by mouth once daily"),
        Medication("acetaminophen", "161", "acetaminophen", "650 mg by mouth every 6 hours as needed"),
    )
}

# Which medications treat which condition: every MedicationRequest's reason is one of these conditions.
INDICATIONS: dict[str, frozenset[str]] = {
    "diabetes": frozenset({"metformin", "insulin_glargine", "empagliflozin", "semaglutide"}),
    "ckd3": frozenset({"lisinopril", "empagliflozin"}),  # SGLT2 inhibitors slow CKD and treat HF too
    "hypertension": frozenset({"lisinopril", "amlodipine"}),
    "heart_failure": frozenset({"furosemide", "carvedilol", "lisinopril", "empagliflozin"}),
    "afib": frozenset({"apixaban", "metoprolol"}),
    "hyperlipidemia": frozenset({"atorvastatin"}),
    "copd": frozenset({"tiotropium", "albuterol"}),
    "rheumatoid_arthritis": frozenset({"methotrexate", "adalimumab"}),
    "knee_oa": frozenset({"meloxicam", "acetaminophen"}),
    "low_back_pain": frozenset({"acetaminophen"}),
    "obesity": frozenset({"semaglutide"}),
}
# NSAIDs are avoided in chronic kidney disease.
NEPHROTOXIC = frozenset({"meloxicam"})


@dataclass(frozen=True)
class Lab:
    key: str
    loinc: str
    display: str
    unit: str  # UCUM
    low: float | None
    high: float | None
    decimals: int
    category: str = "laboratory"


LABS: dict[str, Lab] = {
    lab.key: lab
    for lab in (
        Lab("creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.3, 2),
        Lab("potassium", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 1),
        Lab("sodium", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 136, 145, 0),
        Lab("hemoglobin", "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12.0, 17.5, 1),
        Lab("troponin_i", "10839-9", "Troponin I.cardiac [Mass/volume] in Serum or Plasma", "ng/mL",
            None, 0.04, 3),
        Lab("lactate", "2524-7", "Lactate [Moles/volume] in Serum or Plasma", "mmol/L", 0.5, 2.2, 1),
        Lab("glucose", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 99, 0),
        Lab("hba1c", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 5.6, 1),
        Lab("wbc", "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4.5, 11.0, 1),
        Lab("heart_rate", "8867-4", "Heart rate", "/min", 60, 100, 0, "vital-signs"),
        Lab("temperature", "8310-5", "Body temperature", "Cel", 36.1, 37.9, 1, "vital-signs"),
        Lab("spo2", "2708-6", "Oxygen saturation in Arterial blood", "%", 94, 100, 0, "vital-signs"),
        Lab("resp_rate", "9279-1", "Respiratory rate", "/min", 12, 20, 0, "vital-signs"),
        Lab("systolic", "8480-6", "Systolic blood pressure", "mm[Hg]", 90, 130, 0, "vital-signs"),
        Lab("diastolic", "8462-4", "Diastolic blood pressure", "mm[Hg]", 60, 80, 0, "vital-signs"),
    )
}  # fmt: skip
BLOOD_PRESSURE_PANEL = ("85354-9", "Blood pressure panel with all children optional")
# Sex-specific adult reference ranges where they differ.
SEX_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("creatinine", "male"): (0.7, 1.3),
    ("creatinine", "female"): (0.6, 1.1),
    ("hemoglobin", "male"): (13.5, 17.5),
    ("hemoglobin", "female"): (12.0, 15.5),
}


@dataclass(frozen=True)
class ProcedureCode:
    key: str
    system: str
    code: str
    display: str


PROCEDURES: dict[str, ProcedureCode] = {
    p.key: p
    for p in (
        ProcedureCode("echocardiography", SNOMED, "40701008", "Echocardiography"),
        ProcedureCode("chest_xray", SNOMED, "399208008", "Plain chest X-ray"),
        ProcedureCode("colonoscopy", SNOMED, "73761001", "Colonoscopy"),
        ProcedureCode("ecg", SNOMED, "29303009", "Electrocardiographic procedure"),
        ProcedureCode("spirometry", SNOMED, "127783003", "Spirometry"),
    )
}

# Orders that payers put under prior authorization, each with its indication.
PRIOR_AUTH_SERVICES: dict[str, tuple[ProcedureCode, ProcedureCode | None, str]] = {
    "mri_lumbar_spine": (
        ProcedureCode("mri_lumbar_spine", CPT, "72148", "MRI lumbar spine without contrast"),
        None,
        "low_back_pain",
    ),
    "total_knee_arthroplasty": (
        ProcedureCode("total_knee_arthroplasty", CPT, "27447", "Total knee arthroplasty"),
        ProcedureCode("total_knee_arthroplasty", SNOMED, "609588000", "Total knee replacement"),
        "knee_oa",
    ),
}
PRIOR_AUTH_MEDICATIONS: dict[str, str] = {"semaglutide": "diabetes", "adalimumab": "rheumatoid_arthritis"}


@dataclass(frozen=True)
class Payer:
    key: str
    name: str
    sopt: str
    sopt_display: str


PAYERS: dict[str, Payer] = {
    p.key: p
    for p in (
        Payer("medicare", "Medicare (Centers for Medicare & Medicaid Services)", "1", "MEDICARE"),
        Payer("humana-ma", "Humana Medicare Advantage", "111", "Medicare HMO"),
        Payer("medicaid", "State Medicaid", "2", "MEDICAID"),
        Payer("aetna", "Aetna", "5", "PRIVATE HEALTH INSURANCE"),
        Payer("unitedhealthcare", "UnitedHealthcare", "5", "PRIVATE HEALTH INSURANCE"),
        Payer("bcbs", "Blue Cross Blue Shield", "5", "PRIVATE HEALTH INSURANCE"),
        Payer("cigna", "Cigna Healthcare", "5", "PRIVATE HEALTH INSURANCE"),
    )
}

# Practitioner roles the pipelines route work to (review, escalation chains).
ROLES: dict[str, str] = {
    "hospitalist": "Hospitalist",
    "primary-care": "Primary care physician",
    "orthopedic-surgeon": "Orthopedic surgeon",
    "pa-staff": "Prior authorization staff",
    "pa-supervisor": "Prior authorization supervisor",
    "charge-nurse": "Charge nurse",
    "department-chief": "Department chief",
}

ALLERGENS: dict[str, tuple[str, str, str]] = {
    # key: (SNOMED substance, display, category)
    "penicillin": ("373270004", "Penicillin -class of antibiotic-", "medication"),
    "sulfonamide": ("387406002", "Sulfonamide", "medication"),
    "peanut": ("256349002", "Peanut - dietary", "food"),
    "latex": ("111088007", "Latex", "environment"),
}
REACTIONS: dict[str, tuple[str, str]] = {
    "rash": ("271807003", "Eruption of skin"),
    "hives": ("247472004", "Weal"),
    "anaphylaxis": ("39579001", "Anaphylaxis"),
}

DISPOSITIONS: dict[str, str] = {
    "home": "Home",
    "snf": "Skilled nursing facility",
    "rehab": "Rehabilitation",
    "hosp": "Hospice",
    "aadvice": "Left against advice",
}

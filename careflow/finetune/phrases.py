"""What clinicians write in a follow-up note, varied enough that two synthetic notes about the same
conditions are not near-duplicates (careflow/finetune/export.py builds notes from these)."""

from __future__ import annotations

import random

# What clinicians write, varied enough that two notes about the same conditions are not duplicates.
SYMPTOMS = {
    "diabetes": [
        "sugars have run between {lo} and {hi} at home",
        "no hypoglycemic episodes",
        "one low sugar of {lo2} last month",
        "checks sugars {n} times a day",
        "no foot numbness",
    ],
    "hypertension": [
        "home blood pressures mostly in the {bp}s",
        "no headaches or vision changes",
        "ran out of the blood pressure pill for {n} days",
        "occasional lightheadedness on standing",
    ],
    "heart_failure": [
        "two pillow orthopnea, stable",
        "weight up {n} pounds this week",
        "walks {n} blocks before resting",
        "no paroxysmal nocturnal dyspnea",
        "salt intake has crept up",
    ],
    "copd": [
        "uses albuterol {n} times a week",
        "no change in sputum",
        "winded after one flight of stairs",
        "one exacerbation since the last visit",
    ],
    "afib": [
        "occasional palpitations",
        "no bleeding on anticoagulation",
        "an episode of racing heart {n} days ago",
    ],
    "hyperlipidemia": [
        "tolerating the statin without myalgias",
        "diet unchanged",
        "eats out {n} times a week",
    ],
    "ckd3": ["no change in urine output", "avoiding NSAIDs", "nocturia {n} times a night"],
    "obesity": ["walking {n} times a week", "weight down {n} pounds", "trying a lower carbohydrate diet"],
    "rheumatoid_arthritis": [
        "morning stiffness about {n}0 minutes",
        "no new swollen joints",
        "hand pain worse in the cold",
    ],
    "knee_oa": ["right knee pain worse on stairs", "no locking or giving way", "pain {n} out of 10 at worst"],
    "low_back_pain": [
        "low back pain without radiation",
        "no numbness or bladder symptoms",
        "pain worse after sitting for {n} hours",
    ],
}
COMPLAINTS = [
    "a cough for {n} days",
    "left shoulder pain for {n} weeks",
    "fatigue",
    "dizziness on standing",
    "a rash on the forearm",
    "heartburn after meals",
    "poor sleep",
    "ankle swelling",
    "a sore throat",
    "headaches twice a week",
    "constipation",
    "a painful big toe",
]
REASONS = [
    "follow-up of {conds}",
    "a medication review ({conds})",
    "a visit after a recent hospital stay; history of {conds}",
    "a new complaint of {complaint}; known {conds}",
    "an annual visit; {conds}",
]
SOCIAL = [
    "Never smoker.",
    "Quit smoking {n} years ago.",
    "Smokes {n} cigarettes a day.",
    "Drinks {n} glasses of wine a week.",
    "Works as a {job}.",
    "Retired {job}.",
    "Lives alone.",
    "Cares for a grandchild after school.",
    "Walks the dog daily.",
]
RELATIONS = ["daughter", "son", "wife", "husband", "sister", "neighbor"]
RELATIVE_DOES = [" helps with medications", " drives to visits", " is the emergency contact"]
FIRST_NAMES = ["Anna", "Luis", "Grace", "Omar", "Priya", "Daniel", "Mei", "Tomas", "Aisha", "Peter"]
LAST_NAMES = ["Novak", "Okafor", "Brennan", "Castillo", "Haddad", "Lindqvist", "Moreau", "Tanaka"]
JOBS = ["teacher", "electrician", "nurse", "bus driver", "accountant", "farmer", "chef", "mechanic"]
EXAM = [
    "Lungs clear to auscultation.",
    "Scattered expiratory wheezes.",
    "Heart regular, no murmur.",
    "Irregularly irregular rhythm.",
    "Trace bilateral ankle edema.",
    "No edema.",
    "Abdomen soft, nontender.",
    "Right knee crepitus, full extension.",
    "Paraspinal tenderness at L4-L5.",
    "Monofilament sensation intact.",
    "Mild synovitis of the MCP joints.",
    "Alert and oriented, in no distress.",
    "Oropharynx mildly erythematous.",
    "Skin warm and dry.",
]
LABS = {
    "diabetes": "A1c {a1c}%",
    "ckd3": "creatinine {cr}, eGFR {egfr}",
    "hyperlipidemia": "LDL {ldl}",
    "heart_failure": "BNP {bnp}",
    "obesity": "BMI {bmi}",
}
STATUS = ["stable", "improving", "not at goal", "worsening", "well controlled", "suboptimally controlled"]
PLANS = {
    "diabetes": [
        "Recheck A1c in three months",
        "Increase metformin as tolerated",
        "Diabetic eye exam ordered",
        "Foot care reviewed",
    ],
    "hypertension": [
        "Continue home blood pressure log",
        "Increase amlodipine to 10 mg",
        "Low salt diet reviewed",
    ],
    "heart_failure": [
        "Daily weights, call if up three pounds",
        "Increase furosemide for three days",
        "Echocardiogram ordered",
    ],
    "copd": [
        "Continue inhaler, pulmonary rehab referral offered",
        "Inhaler technique reviewed",
        "Spirometry at next visit",
    ],
    "afib": ["Continue anticoagulation, ECG at next visit", "Rate control adequate, no change"],
    "hyperlipidemia": ["Lipid panel before next visit", "Continue atorvastatin", "Dietitian referral"],
    "ckd3": ["Basic metabolic panel in six weeks", "Avoid nephrotoxic drugs", "Urine albumin ordered"],
    "obesity": ["Nutrition referral, activity goals reviewed", "Discussed GLP-1 options"],
    "rheumatoid_arthritis": ["Labs for methotrexate monitoring", "Rheumatology follow-up in three months"],
    "knee_oa": ["Physical therapy, acetaminophen as needed", "Knee injection offered", "Knee brace fitted"],
    "low_back_pain": [
        "Core strengthening, return if red flags",
        "Heat and stretching",
        "No imaging needed now",
    ],
}
EXTRAS = [
    "Influenza vaccine given today.",
    "Colon cancer screening discussed.",
    "Referred to podiatry.",
    "Sleep hygiene reviewed.",
    "Advance directive discussed.",
    "Fall risk reviewed.",
    "Shingles vaccine recommended.",
    "Medication list reconciled.",
]


def fill(rng: random.Random, text: str, **extra: str) -> str:
    n = rng.randint(2, 9)
    values = {
        "lo": rng.randint(110, 150),
        "hi": rng.randint(160, 240),
        "lo2": rng.randint(50, 68),
        "n": n,
        "bp": rng.choice([120, 130, 140, 150]),
        "job": rng.choice(JOBS),
        "a1c": round(rng.uniform(6.1, 10.4), 1),
        "cr": round(rng.uniform(1.2, 2.2), 1),
        "egfr": rng.randint(31, 59),
        "ldl": rng.randint(62, 190),
        "bnp": rng.randint(90, 900),
        "bmi": round(rng.uniform(24, 41), 1),
        "complaint": rng.choice(COMPLAINTS).format(n=n),
    }
    return text.format(**(values | extra))

"""The clinically decisive terms of a question: what must agree before a cached answer is reused.

Embedding similarity alone is not a safe cache key: with MiniLM, "first-line antibiotic for CAP" is
closer to "first-line antibiotic for CAP in penicillin allergy" than to a true paraphrase.  The semantic
cache therefore reuses an answer only when both questions name the same drugs, conditions, populations,
care settings, routes, severity, negation and quantities (`guard_agrees`).

Every synonym and abbreviation maps to one canonical term ("CAP" and "community-acquired pneumonia" are
`condition:community-acquired pneumonia`; "Eliquis" is `drug:apixaban`), so true paraphrases agree.
Defaults that do not change an answer (adult, first-line) are no terms at all.  The vocabulary errs
towards distinguishing: a missed cache hit costs one LLM call, a false hit is a wrong clinical answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache

# canonical name -> synonyms (the canonical name itself always matches).  Lower case; a space or hyphen
# in a phrase matches a space, a hyphen or nothing; a final plural "s"/"es" is optional.
DRUGS: dict[str, tuple[str, ...]] = {
    # antibacterials
    "amoxicillin": ("amox", "amoxil"),
    "amoxicillin-clavulanate": (
        "amoxicillin clavulanate",
        "amoxicillin/clavulanate",
        "co-amoxiclav",
        "augmentin",
        "amox-clav",
    ),
    "ampicillin": (),
    "ampicillin-sulbactam": ("ampicillin/sulbactam", "unasyn"),
    "penicillin": ("pcn", "penicillin g", "penicillin v", "benzylpenicillin"),
    "piperacillin-tazobactam": ("piperacillin/tazobactam", "pip-tazo", "pip/tazo", "zosyn", "tazocin"),
    "cefazolin": ("ancef",),
    "cephalexin": ("cefalexin", "keflex"),
    "ceftriaxone": ("rocephin",),
    "cefuroxime": (),
    "cefepime": ("maxipime",),
    "ceftazidime": (),
    "cefpodoxime": (),
    "meropenem": ("merrem",),
    "ertapenem": ("invanz",),
    "imipenem": ("imipenem-cilastatin",),
    "aztreonam": (),
    "azithromycin": ("zithromax", "z-pak", "zpak"),
    "clarithromycin": ("biaxin",),
    "erythromycin": (),
    "doxycycline": ("doxy", "vibramycin"),
    "minocycline": (),
    "levofloxacin": ("levaquin",),
    "moxifloxacin": ("avelox",),
    "ciprofloxacin": ("cipro",),
    "vancomycin": ("vanc", "vanco"),
    "linezolid": ("zyvox",),
    "daptomycin": (),
    "clindamycin": ("cleocin",),
    "metronidazole": ("flagyl",),
    "trimethoprim-sulfamethoxazole": (
        "tmp-smx",
        "tmp/smx",
        "co-trimoxazole",
        "cotrimoxazole",
        "bactrim",
        "septra",
        "sulfamethoxazole-trimethoprim",
    ),
    "nitrofurantoin": ("macrobid", "macrodantin"),
    "fosfomycin": ("monurol",),
    "gentamicin": (),
    "tobramycin": (),
    "amikacin": (),
    "rifampin": ("rifampicin",),
    "fidaxomicin": ("dificid",),
    "oseltamivir": ("tamiflu",),
    "acyclovir": ("aciclovir",),
    "fluconazole": ("diflucan",),
    # anticoagulants, antiplatelets, thrombolytics
    "heparin": ("unfractionated heparin", "ufh"),
    "enoxaparin": ("lovenox", "clexane"),
    "dalteparin": ("fragmin",),
    "fondaparinux": ("arixtra",),
    "warfarin": ("coumadin", "jantoven"),
    "apixaban": ("eliquis",),
    "rivaroxaban": ("xarelto",),
    "dabigatran": ("pradaxa",),
    "edoxaban": ("savaysa", "lixiana"),
    "aspirin": ("asa", "acetylsalicylic acid"),
    "clopidogrel": ("plavix",),
    "ticagrelor": ("brilinta",),
    "prasugrel": ("effient",),
    "alteplase": ("tpa", "t-pa", "activase", "rt-pa"),
    "tenecteplase": ("tnk", "tnkase"),
    "vitamin k": ("phytonadione", "phytomenadione"),
    "prothrombin complex concentrate": ("pcc", "4f-pcc", "kcentra", "four-factor pcc"),
    "idarucizumab": ("praxbind",),
    "andexanet alfa": ("andexxa", "andexanet"),
    "protamine": ("protamine sulfate",),
    # cardiovascular and renal
    "metoprolol": ("lopressor", "toprol"),
    "carvedilol": ("coreg",),
    "bisoprolol": (),
    "atenolol": (),
    "propranolol": (),
    "diltiazem": ("cardizem",),
    "verapamil": (),
    "amlodipine": ("norvasc",),
    "nifedipine": (),
    "labetalol": (),
    "hydralazine": (),
    "nicardipine": ("cardene",),
    "lisinopril": ("zestril", "prinivil"),
    "enalapril": (),
    "ramipril": (),
    "losartan": ("cozaar",),
    "valsartan": (),
    "sacubitril-valsartan": ("sacubitril/valsartan", "entresto", "arni"),
    "spironolactone": ("aldactone",),
    "eplerenone": (),
    "furosemide": ("lasix", "frusemide"),
    "bumetanide": ("bumex",),
    "torsemide": (),
    "hydrochlorothiazide": ("hctz",),
    "chlorthalidone": (),
    "digoxin": ("lanoxin",),
    "amiodarone": ("cordarone",),
    "adenosine": (),
    "atorvastatin": ("lipitor",),
    "rosuvastatin": ("crestor",),
    "simvastatin": (),
    "nitroglycerin": ("glyceryl trinitrate", "gtn", "ntg"),
    "norepinephrine": ("noradrenaline", "levophed"),
    "epinephrine": ("adrenaline",),
    "vasopressin": (),
    "phenylephrine": (),
    "dobutamine": (),
    "dopamine": (),
    # diabetes, endocrine, electrolytes
    "insulin": ("regular insulin",),
    "insulin glargine": ("glargine", "lantus", "basaglar", "toujeo"),
    "insulin lispro": ("lispro", "humalog"),
    "insulin aspart": ("novolog", "novorapid"),
    "metformin": ("glucophage",),
    "glipizide": (),
    "glyburide": ("glibenclamide",),
    "empagliflozin": ("jardiance",),
    "dapagliflozin": ("farxiga", "forxiga"),
    "canagliflozin": ("invokana",),
    "semaglutide": ("ozempic", "wegovy", "rybelsus"),
    "liraglutide": ("victoza", "saxenda"),
    "dulaglutide": ("trulicity",),
    "tirzepatide": ("mounjaro", "zepbound"),
    "levothyroxine": ("synthroid",),
    "hydrocortisone": (),
    "dexamethasone": ("decadron",),
    "prednisone": (),
    "prednisolone": (),
    "methylprednisolone": ("solu-medrol", "medrol"),
    "potassium chloride": ("kcl",),
    "calcium gluconate": (),
    "calcium chloride": (),
    "sodium bicarbonate": ("bicarbonate", "bicarb"),
    "sodium zirconium cyclosilicate": ("lokelma", "szc"),
    "patiromer": ("veltassa",),
    "sodium polystyrene sulfonate": ("kayexalate", "sps"),
    "albuterol": ("salbutamol", "ventolin", "proventil"),
    "ipratropium": ("atrovent",),
    "tiotropium": ("spiriva",),
    "magnesium sulfate": ("magnesium", "mgso4"),
    "dextrose": ("d50", "d10", "iv glucose"),
    "glucagon": (),
    # analgesia, sedation, neuro, GI
    "acetaminophen": ("paracetamol", "tylenol", "apap"),
    "ibuprofen": ("advil", "motrin"),
    "naproxen": ("aleve", "naprosyn"),
    "ketorolac": ("toradol",),
    "celecoxib": ("celebrex",),
    "morphine": (),
    "hydromorphone": ("dilaudid",),
    "oxycodone": ("oxycontin", "percocet"),
    "fentanyl": (),
    "tramadol": ("ultram",),
    "methadone": (),
    "buprenorphine": ("suboxone", "subutex"),
    "naloxone": ("narcan",),
    "gabapentin": ("neurontin",),
    "pregabalin": ("lyrica",),
    "lidocaine": ("lignocaine",),
    "ketamine": (),
    "haloperidol": ("haldol",),
    "quetiapine": ("seroquel",),
    "lorazepam": ("ativan",),
    "midazolam": ("versed",),
    "diazepam": ("valium",),
    "levetiracetam": ("keppra",),
    "phenytoin": ("dilantin",),
    "ondansetron": ("zofran",),
    "metoclopramide": ("reglan",),
    "pantoprazole": ("protonix",),
    "omeprazole": ("prilosec",),
    "famotidine": ("pepcid",),
    "lactulose": (),
    "octreotide": (),
    "adalimumab": ("humira",),
    "methotrexate": (),
    "allopurinol": (),
    "colchicine": (),
}

DRUG_CLASSES: dict[str, tuple[str, ...]] = {
    "beta-lactam": ("beta lactam", "b-lactam", "β-lactam"),
    "cephalosporin": ("cephalosporins",),
    "carbapenem": (),
    "macrolide": (),
    "fluoroquinolone": ("quinolone",),
    "tetracycline": (),
    "aminoglycoside": (),
    "anticoagulant": ("anticoagulation", "blood thinner"),
    "doac": ("noac", "direct oral anticoagulant", "novel oral anticoagulant"),
    "lmwh": ("low molecular weight heparin", "low-molecular-weight heparin"),
    "antiplatelet": (),
    "thrombolytic": ("thrombolysis", "fibrinolytic", "fibrinolysis", "lytic"),
    "ace inhibitor": ("acei", "ace-i", "angiotensin converting enzyme inhibitor"),
    "arb": ("angiotensin receptor blocker", "angiotensin ii receptor blocker"),
    "beta blocker": ("beta-blocker", "b-blocker"),
    "calcium channel blocker": ("ccb",),
    "mra": ("mineralocorticoid receptor antagonist", "aldosterone antagonist"),
    "loop diuretic": (),
    "thiazide": (),
    "statin": (),
    "sglt2 inhibitor": ("sglt2i", "sglt-2 inhibitor", "sglt2"),
    "glp-1 receptor agonist": ("glp-1 ra", "glp1 ra", "glp-1 agonist", "glp1 agonist", "glp-1"),
    "sulfonylurea": (),
    "nsaid": ("non-steroidal anti-inflammatory", "nonsteroidal anti-inflammatory"),
    "opioid": ("opiate", "narcotic"),
    "benzodiazepine": ("benzo",),
    "antipsychotic": (),
    "corticosteroid": ("steroid", "glucocorticoid"),
    "ppi": ("proton pump inhibitor",),
    "vasopressor": ("pressor",),
    "inotrope": (),
    "bronchodilator": (),
    "biologic": (),
}

CONDITIONS: dict[str, tuple[str, ...]] = {
    "community-acquired pneumonia": ("cap", "community acquired pneumonia"),
    "hospital-acquired pneumonia": ("hap", "nosocomial pneumonia"),
    "ventilator-associated pneumonia": ("vap",),
    "aspiration pneumonia": (),
    "pneumonia": (),
    "sepsis": ("septicemia", "septicaemia", "urosepsis"),
    "septic shock": (),
    "diabetic ketoacidosis": ("dka", "ketoacidosis"),
    "hyperosmolar hyperglycemic state": ("hhs", "hyperosmolar state"),
    "hypoglycemia": ("hypoglycaemia", "low blood sugar", "low glucose"),
    "hyperglycemia": ("hyperglycaemia", "high blood sugar"),
    "diabetes": ("diabetes mellitus", "type 2 diabetes", "t2dm", "t2d", "dm2", "diabetic"),
    "type 1 diabetes": ("t1dm", "t1d", "dm1"),
    "hyperkalemia": ("hyperkalaemia", "high potassium", "elevated potassium"),
    "hypokalemia": ("hypokalaemia", "low potassium"),
    "hyponatremia": ("hyponatraemia", "low sodium"),
    "hypernatremia": ("hypernatraemia", "high sodium"),
    "hypomagnesemia": ("low magnesium",),
    "acute kidney injury": ("aki", "acute renal failure", "arf", "acute renal injury"),
    "heart failure": ("hf", "chf", "congestive heart failure", "cardiac failure"),
    "hfref": (
        "heart failure with reduced ejection fraction",
        "reduced ejection fraction",
        "systolic heart failure",
    ),
    "hfpef": (
        "heart failure with preserved ejection fraction",
        "preserved ejection fraction",
        "diastolic heart failure",
    ),
    "acute decompensated heart failure": ("adhf", "decompensated heart failure", "acute heart failure"),
    "copd": ("chronic obstructive pulmonary disease", "emphysema", "chronic bronchitis"),
    "copd exacerbation": ("aecopd", "copd flare", "exacerbation of copd"),
    "asthma": (),
    "venous thromboembolism": ("vte", "venous thrombosis"),
    "pulmonary embolism": ("pulmonary embolus", "pulmonary emboli"),
    "deep vein thrombosis": ("dvt", "deep venous thrombosis"),
    "atrial fibrillation": ("afib", "a-fib", "a fib", "atrial flutter"),
    "myocardial infarction": ("heart attack", "stemi", "nstemi"),
    "acute coronary syndrome": ("acs", "unstable angina"),
    "stroke": ("cva", "cerebrovascular accident"),
    "ischemic stroke": ("ischaemic stroke", "acute ischemic stroke", "ais"),
    "hemorrhagic stroke": (
        "haemorrhagic stroke",
        "intracerebral hemorrhage",
        "ich",
        "intracranial hemorrhage",
        "intracranial haemorrhage",
    ),
    "tia": ("transient ischemic attack", "transient ischaemic attack", "mini-stroke"),
    "hypertension": ("htn", "high blood pressure"),
    "hypertensive emergency": ("hypertensive crisis",),
    "hypotension": ("low blood pressure",),
    "urinary tract infection": ("uti", "bladder infection", "cystitis"),
    "pyelonephritis": ("kidney infection", "pyelo"),
    "cellulitis": ("skin and soft tissue infection", "ssti"),
    "clostridioides difficile infection": (
        "c. diff",
        "c diff",
        "cdiff",
        "cdi",
        "clostridium difficile",
        "c. difficile",
        "c difficile",
    ),
    "mrsa": ("methicillin-resistant staphylococcus aureus",),
    "meningitis": (),
    "endocarditis": (),
    "osteomyelitis": (),
    "influenza": ("flu",),
    "covid-19": ("covid", "sars-cov-2", "coronavirus"),
    "bleeding": ("hemorrhage", "haemorrhage", "major bleed", "bleed"),
    "gi bleeding": (
        "gi bleed",
        "gastrointestinal bleeding",
        "upper gi bleed",
        "ugib",
        "gastrointestinal bleed",
    ),
    "delirium": ("delirious",),
    "alcohol withdrawal": (
        "etoh withdrawal",
        "delirium tremens",
        "withdrawing from alcohol",
        "alcohol withdrawing",
    ),
    "mechanical heart valve": (
        "mechanical valve",
        "prosthetic valve",
        "prosthetic heart valve",
        "valve replacement",
    ),
    "coronary artery disease": (
        "cad",
        "ischemic heart disease",
        "ischaemic heart disease",
        "coronary disease",
    ),
    "crohn disease": ("crohn's disease", "crohns disease", "crohn's", "crohns"),
    "ulcerative colitis": (),
    "variceal bleeding": ("varices", "variceal bleed", "variceal hemorrhage", "esophageal varices"),
    "stevens-johnson syndrome": ("sjs", "toxic epidermal necrolysis"),
    "pressure injury": ("pressure ulcer", "pressure ulcers", "bedsore", "pressure sore"),
    "opioid use disorder": ("oud", "opioid dependence"),
    "seizure": ("seizures", "status epilepticus", "epilepsy"),
    "pain": ("analgesia",),
    "chronic pain": (),
    "nausea": ("vomiting", "ponv"),
    "anaphylaxis": (),
    "obesity": ("overweight",),
    "rheumatoid arthritis": (),
    "osteoarthritis": ("knee osteoarthritis", "knee oa"),
    "low back pain": ("back pain", "lumbar pain", "lbp"),
    "gout": (),
    "cirrhosis": (),
    "hepatic encephalopathy": (),
    "pancreatitis": (),
    "anemia": ("anaemia",),
    "thrombocytopenia": ("low platelets", "hit", "heparin-induced thrombocytopenia"),
    "hyperlipidemia": ("hypercholesterolemia", "high cholesterol", "dyslipidemia"),
    "cardiac arrest": (),
    "shock": (),
    "dehydration": (),
    "neutropenic fever": ("febrile neutropenia", "neutropenia"),
}

# Populations and care settings that change the answer.  Renal impairment and CKD are one population
# (the answer is the renal dose adjustment); hepatic impairment includes cirrhosis.
POPULATIONS: dict[str, tuple[str, ...]] = {
    "pregnancy": (
        "pregnant",
        "pregnancies",
        "expecting mother",
        "gestation",
        "antenatal",
        "prenatal",
        "trimester",
        "obstetric",
    ),
    "breastfeeding": ("breast feeding", "breast-feeding", "lactation", "lactating", "nursing mother"),
    "pediatric": (
        "paediatric",
        "child",
        "children",
        "kid",
        "kids",
        "infant",
        "infants",
        "toddler",
        "adolescent",
        "adolescents",
        "teen",
        "teenager",
        "pediatrics",
        "paediatrics",
    ),
    "neonate": ("neonatal", "newborn", "newborns", "neonates"),
    "elderly": (
        "older adult",
        "older adults",
        "older patient",
        "older patients",
        "geriatric",
        "frail",
        "very old",
        "aged",
    ),
    "renal impairment": (
        "renal insufficiency",
        "renal failure",
        "kidney disease",
        "chronic kidney disease",
        "ckd",
        "esrd",
        "esrd",
        "end-stage renal disease",
        "end stage renal disease",
        "dialysis",
        "hemodialysis",
        "haemodialysis",
        "peritoneal dialysis",
        "egfr",
        "gfr",
        "crcl",
        "creatinine clearance",
        "renal function",
        "kidney function",
        "renal dosing",
        "renal dose",
        "renally impaired",
        "impaired renal function",
        "reduced renal function",
        "poor kidney function",
        "renal impairement",
    ),
    "hepatic impairment": (
        "liver disease",
        "liver failure",
        "hepatic failure",
        "liver impairment",
        "hepatic insufficiency",
        "child-pugh",
        "child pugh",
        "impaired liver function",
        "hepatic dysfunction",
        "liver dysfunction",
    ),
    "allergy": ("allergic", "allergies", "allergy to", "hypersensitivity", "anaphylactic"),
    "immunocompromised": ("immunosuppressed", "immunocompromise", "transplant recipient", "hiv"),
    "obese patient": ("morbid obesity", "bmi over 40", "bmi > 40"),
}

SETTINGS: dict[str, tuple[str, ...]] = {
    "icu": ("intensive care", "intensive care unit", "critical care", "critically ill", "itu"),
    "inpatient": (
        "hospitalized",
        "hospitalised",
        "admitted",
        "ward",
        "non-icu",
        "hospital ward",
        "in hospital",
        "in the hospital",
        "medical ward",
        "floor",
        "admission",
        "requiring admission",
        "hospitalization",
        "hospitalisation",
        "hospital admission",
    ),
    "outpatient": (
        "ambulatory",
        "clinic",
        "at home",
        "community setting",
        "discharged",
        "office",
        "primary care",
        "not hospitalized",
        "not admitted",
    ),
    "emergency department": ("ed", "emergency room", "er", "a&e"),
    "perioperative": (
        "surgery",
        "surgical",
        "postoperative",
        "post-operative",
        "preoperative",
        "pre-operative",
        "post-op",
        "pre-op",
        "perioperatively",
        "operation",
        "periprocedural",
        "peri-procedural",
    ),
}

ROUTES: dict[str, tuple[str, ...]] = {
    "iv": ("intravenous", "intravenously", "iv push", "infusion", "parenteral", "drip"),
    "oral": ("po", "by mouth", "orally", "tablet", "tablets", "enteral"),
    "subcutaneous": ("sc", "subcut", "sq", "subcutaneously"),
    "intramuscular": ("im", "intramuscularly"),
    "inhaled": ("nebulized", "nebulised", "inhaler", "nebuliser", "nebulizer"),
}

# Severity and line of therapy: the default (unqualified, first-line) is no term.
THERAPIES: dict[str, tuple[str, ...]] = {
    "non-invasive ventilation": ("noninvasive ventilation", "niv", "bipap", "cpap", "nippv"),
    "mechanical ventilation": ("intubation", "intubated", "ventilated", "ventilator"),
    "thrombectomy": ("endovascular thrombectomy", "mechanical thrombectomy", "evt"),
    "transfusion": ("transfuse", "transfusing", "transfused", "blood transfusion"),
    "endoscopy": ("egd", "endoscopic"),
}

# Measured quantities: "hemoglobin threshold" and "platelet threshold" have different answers.
LABS: dict[str, tuple[str, ...]] = {
    "hemoglobin": ("hgb", "hb", "haemoglobin"),
    "platelets": ("platelet", "plt", "platelet count"),
    "inr": (),
    "potassium": ("serum potassium", "k+"),
    "sodium": ("serum sodium",),
    "creatinine": ("serum creatinine", "scr"),
    "lactate": ("lactic acid",),
    "troponin": ("trop",),
    "glucose": ("blood glucose", "blood sugar", "capillary glucose", "bg"),
    "ejection fraction": ("ef", "lvef"),
    "oxygen saturation": ("spo2", "sao2", "sats", "o2 sat", "o2 sats", "saturation"),
    "blood pressure": ("bp", "sbp", "systolic blood pressure", "systolic bp"),
}

MODIFIERS: dict[str, tuple[str, ...]] = {
    "severe": ("serious", "severely", "life-threatening", "life threatening", "critical", "fulminant"),
    "mild": ("non-severe", "nonsevere", "uncomplicated", "mild to moderate", "low-risk", "low risk"),
    "moderate": (),
    "complicated": ("complex",),
    "recurrent": ("recurrence", "relapse", "relapsing", "second episode"),
    "second-line": (
        "second line",
        "alternative",
        "alternatives",
        "instead of",
        "other than",
        "if first-line fails",
        "refractory",
        "treatment failure",
        "fails",
        "failed",
        "third-line",
        "third line",
        "salvage",
    ),
    "prophylaxis": ("prophylactic", "prevention", "preventive", "preventing", "prevent"),
    "reversal": ("reverse", "reversing", "antidote"),
    "resistant": ("resistance", "multidrug-resistant", "mdr", "esbl"),
    "comorbidities": (
        "comorbidity",
        "comorbid",
        "co-morbidities",
        "co-morbidity",
        "underlying disease",
        "risk factors",
    ),
    "healthy": (
        "previously healthy",
        "otherwise healthy",
        "no comorbidities",
        "without comorbidities",
        "no comorbidity",
        "no risk factors",
        "without risk factors",
    ),
}

NEGATIONS = (
    "not",
    "no",
    "without",
    "avoid",
    "avoided",
    "avoiding",
    "contraindicated",
    "contraindication",
    "contraindications",
    "never",
    "cannot",
    "can't",
    "dont",
    "don't",
    "shouldn't",
    "should not",
    "unsafe",
    "must not",
    "neither",
    "nor",
    "except",
    "excluding",
    "none",
    "non",
)
NEGATION = "negation"

# Abbreviations that are ordinary words in lower case: matched only as typed in capitals.
CASE_SENSITIVE: dict[str, str] = {
    "PE": "condition:pulmonary embolism",
    "MI": "condition:myocardial infarction",
    "AF": "condition:atrial fibrillation",
    "UA": "condition:acute coronary syndrome",
    "OA": "condition:osteoarthritis",
    "RA": "condition:rheumatoid arthritis",
    "HIT": "condition:thrombocytopenia",
    "ICH": "condition:hemorrhagic stroke",
}
# Lower-case synonyms above that are too ambiguous in lower case: dropped unless typed in capitals.
_AMBIGUOUS_LOWER = frozenset(
    {"hit", "ed", "er", "im", "sc", "floor", "office", "aged", "complex", "critical", "ais", "asa"}
)
_CASE_SENSITIVE_EXTRA: dict[str, str] = {
    "ED": "setting:emergency department",
    "ER": "setting:emergency department",
    "IM": "route:intramuscular",
    "SC": "route:subcutaneous",
    "ARF": "condition:acute kidney injury",
    "AIS": "condition:ischemic stroke",
    "ASA": "drug:aspirin",
    "SPS": "drug:sodium polystyrene sulfonate",
    "TNK": "drug:tenecteplase",
    "PCC": "drug:prothrombin complex concentrate",
}

_GROUPS: tuple[tuple[str, Mapping[str, tuple[str, ...]]], ...] = (
    ("drug", DRUGS),
    ("drug-class", DRUG_CLASSES),
    ("condition", CONDITIONS),
    ("population", POPULATIONS),
    ("setting", SETTINGS),
    ("route", ROUTES),
    ("therapy", THERAPIES),
    ("lab", LABS),
    ("modifier", MODIFIERS),
)

_UNITS: dict[str, tuple[str, float]] = {
    # unit as written -> (canonical unit, factor)
    "mg/kg/day": ("mg/kg/d", 1),
    "mg/kg/d": ("mg/kg/d", 1),
    "mg/kg": ("mg/kg", 1),
    "mcg/kg/min": ("mcg/kg/min", 1),
    "mcg/min": ("mcg/min", 1),
    "mg/h": ("mg/h", 1),
    "mg/hr": ("mg/h", 1),
    "units/kg/h": ("unit/kg/h", 1),
    "units/kg/hr": ("unit/kg/h", 1),
    "units/kg": ("unit/kg", 1),
    "ml/min/1.73m2": ("ml/min", 1),
    "ml/min": ("ml/min", 1),
    "ml/kg": ("ml/kg", 1),
    "ml/h": ("ml/h", 1),
    "ml/hr": ("ml/h", 1),
    "mmol/l": ("mmol/l", 1),
    "meq/l": ("mmol/l", 1),
    "mg/dl": ("mg/dl", 1),
    "g/dl": ("g/dl", 1),
    "mmhg": ("mmhg", 1),
    "mg": ("mg", 1),
    "g": ("mg", 1000),
    "gram": ("mg", 1000),
    "grams": ("mg", 1000),
    "mcg": ("mcg", 1),
    "µg": ("mcg", 1),
    "ug": ("mcg", 1),
    "kg": ("kg", 1),
    "meq": ("mmol", 1),
    "mmol": ("mmol", 1),
    "units": ("unit", 1),
    "unit": ("unit", 1),
    "iu": ("unit", 1),
    "u": ("unit", 1),
    "ml": ("ml", 1),
    "l": ("ml", 1000),
    "%": ("%", 1),
    "percent": ("%", 1),
    "hours": ("h", 1),
    "hour": ("h", 1),
    "hrs": ("h", 1),
    "hr": ("h", 1),
    "h": ("h", 1),
    "minutes": ("min", 1),
    "minute": ("min", 1),
    "mins": ("min", 1),
    "min": ("min", 1),
    "days": ("d", 1),
    "day": ("d", 1),
    "d": ("d", 1),
    "weeks": ("wk", 1),
    "week": ("wk", 1),
    "wks": ("wk", 1),
    "months": ("mo", 1),
    "month": ("mo", 1),
    "years": ("y", 1),
    "year": ("y", 1),
    "yrs": ("y", 1),
    "y": ("y", 1),
}
_FREQUENCIES: dict[str, str] = {
    "once daily": "1/d",
    "daily": "1/d",
    "qd": "1/d",
    "od": "1/d",
    "once a day": "1/d",
    "twice daily": "2/d",
    "bid": "2/d",
    "twice a day": "2/d",
    "b.i.d.": "2/d",
    "every 12 hours": "2/d",
    "three times daily": "3/d",
    "tid": "3/d",
    "three times a day": "3/d",
    "t.i.d.": "3/d",
    "every 8 hours": "3/d",
    "q8h": "3/d",
    "four times daily": "4/d",
    "qid": "4/d",
    "four times a day": "4/d",
    "every 6 hours": "4/d",
    "q6h": "4/d",
    "q12h": "2/d",
    "q24h": "1/d",
    "every 24 hours": "1/d",
    "weekly": "1/wk",
    "once weekly": "1/wk",
}
_LESS = ("<=", "≤", "<", "less than", "below", "under", "lower than", "up to", "at most", "no more than")
_MORE = (
    ">=",
    "≥",
    ">",
    "greater than",
    "above",
    "over",
    "more than",
    "exceeds",
    "exceeding",
    "higher than",
    "at least",
)


def _phrase_pattern(phrase: str) -> str:
    parts = [re.escape(p) for p in re.split(r"[\s\-]+", phrase.strip()) if p]
    body = r"[\s\-]*".join(parts)
    if re.fullmatch(r"[a-z]{4,}", parts[-1]) and not phrase.endswith("s"):
        body += "(?:s|es)?"
    return body


def _word(pattern: str) -> str:
    return rf"(?<![\w]){pattern}(?![\w])"


@cache
def _vocabulary() -> tuple[re.Pattern[str], dict[str, str]]:
    """One alternation over every phrase (longest first), and squashed phrase -> canonical term."""
    canonical: dict[str, str] = {}
    for group, table in _GROUPS:
        for name, synonyms in table.items():
            for phrase in (name, *synonyms):
                if _normalise(phrase) not in _AMBIGUOUS_LOWER:
                    canonical.setdefault(_normalise(phrase), f"{group}:{name}")
    for phrase in NEGATIONS:
        canonical.setdefault(_normalise(phrase), NEGATION)
    for phrase, freq in _FREQUENCIES.items():
        canonical.setdefault(_normalise(phrase), f"frequency:{freq}")
    for phrase in _LESS:
        canonical.setdefault(_normalise(phrase), "compare:<")
    for phrase in _MORE:
        canonical.setdefault(_normalise(phrase), "compare:>")
    symbols = {"<", ">", "<=", ">=", "≤", "≥"}
    words = sorted((p for p in canonical if p not in symbols), key=len, reverse=True)
    alternation = "|".join(_phrase_pattern(p) for p in words)
    pattern = re.compile(rf"(?<![\w])(?:{alternation})(?![\w])|<=|>=|≤|≥|<|>")
    squashed: dict[str, str] = {}
    for phrase, term in canonical.items():
        squashed.setdefault(_squash(phrase), term)
    return pattern, squashed


# Clinical shorthand, spelt out before anything else ("w/o" is a negation).
_SHORTHAND = {
    "w/o": "without", "w/": "with", "abx": "antibiotics", "pt": "patient", "pts": "patients",
    "tx": "treatment", "ppx": "prophylaxis", "hx": "history", "dx": "diagnosis", "sx": "symptoms",
}  # fmt: skip
_SHORTHAND_WORD = re.compile(r"(?<![\w/])(" + "|".join(re.escape(k) for k in _SHORTHAND) + r")(?![\w])")


def _normalise(text: str) -> str:
    """Lower case, one kind of dash and apostrophe, "n't" and shorthand spelt out, single spaces."""
    text = text.lower()
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"n't\b", " not", text)
    text = _SHORTHAND_WORD.sub(lambda m: _SHORTHAND[m.group(1)], text)
    return re.sub(r"\s+", " ", text).strip()


def _squash(phrase: str) -> str:
    return re.sub(r"[\s\-]+", "", phrase)


def _lookup(matched: str, squashed: Mapping[str, str]) -> str | None:
    key = _squash(matched)
    if key in squashed:
        return squashed[key]
    for suffix in ("es", "s"):  # the optional plural of _phrase_pattern
        if key.endswith(suffix) and key[: -len(suffix)] in squashed:
            return squashed[key[: -len(suffix)]]
    return None


_NUMBER = re.compile(
    r"(?<![\w.])(?<![a-z]-)(\d+(?:[.,]\d+)?)\s*("
    + "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
    + r")?(?![\w/])"
)
_Q_HOURS = re.compile(r"(?<![\w])q(\d+)h(?![\w])")


def _number(value: str) -> str:
    n = float(value.replace(",", "."))
    return f"{n:g}"


def _quantities(text: str) -> Iterable[str]:
    for m in _Q_HOURS.finditer(text):
        yield f"quantity:{int(m.group(1))}h"  # "q4h" reads like "every 4 hours"
    for m in _NUMBER.finditer(text):
        unit = m.group(2)
        if unit is None:
            yield f"number:{_number(m.group(1))}"
            continue
        canonical_unit, factor = _UNITS[unit]
        amount = float(m.group(1).replace(",", ".")) * factor
        yield f"quantity:{amount:g}{canonical_unit}"


def decisive_terms(text: str) -> frozenset[str]:
    """The canonical clinically decisive terms of `text`, e.g. {"condition:community-acquired pneumonia",
    "population:allergy", "drug:penicillin"}."""
    pattern, canonical = _vocabulary()
    terms: set[str] = set()
    for abbreviation, canonical_term in {**CASE_SENSITIVE, **_CASE_SENSITIVE_EXTRA}.items():
        if re.search(rf"(?<![\w]){re.escape(abbreviation)}(?![\w])", text):
            terms.add(canonical_term)
    normal = _normalise(text)
    rest: list[str] = []
    last = 0
    for m in pattern.finditer(normal):
        term = _lookup(m.group(0), canonical)
        if term is not None:
            terms.add(term)
        rest.append(normal[last : m.start()])
        last = m.end()
    rest.append(normal[last:])
    # Frequencies like "q8h" and doses are read from what the vocabulary did not consume, so the "2"
    # of "SGLT2" or the "1" of "GLP-1" is never a number.
    remainder = " ".join(rest)
    terms.update(_quantities(remainder))
    return frozenset(terms)


def guard_agrees(a: str, b: str) -> bool:
    """True when two questions carry the same clinically decisive terms (the cache may reuse an answer)."""
    return decisive_terms(a) == decisive_terms(b)


# Groups whose synonyms canonical_question spells out: names of things.  Populations and settings keep
# their wording ("dialysis" is more specific than "renal impairment" for retrieval).
_SPELLED_OUT = ("drug:", "drug-class:", "condition:")


def canonical_question(text: str) -> str:
    """The question (lower case) with drug, drug-class and condition synonyms and abbreviations replaced by
    their canonical names: "first-line abx for CAP" -> "first-line abx for community-acquired pneumonia".
    Embedding this instead of the raw text brings abbreviated and spelt-out paraphrases together."""
    pattern, canonical = _vocabulary()
    found = {**CASE_SENSITIVE, **_CASE_SENSITIVE_EXTRA}

    def spell(term: str | None, fallback: str) -> str:
        if term is None or not term.startswith(_SPELLED_OUT):
            return fallback
        return term.split(":", 1)[1]

    for abbreviation, term in found.items():
        text = re.sub(rf"(?<![\w]){re.escape(abbreviation)}(?![\w])", spell(term, abbreviation), text)
    return pattern.sub(lambda m: spell(_lookup(m.group(0), canonical), m.group(0)), _normalise(text))


# Words that carry no clinical content: dropped from the text a cache entry is embedded under, so that
# "what is the dose of X for Y?" and "X dose Y" meet.  Negations and comparisons are not in this list.
FILLER_WORDS = frozenset(
    "what is are was the a an for of to in on do does did i should we you can could how which when with "
    "who that this be been give given start use used there any please tell me my our it its at by as from "
    "much many".split()
)


def cache_key_text(text: str) -> str:
    """The text the semantic cache embeds a question under: canonical names, no punctuation or filler."""
    words = re.sub(r"[?.,!:;()\"]", " ", canonical_question(text)).split()
    return " ".join(w for w in words if w not in FILLER_WORDS)

"""Synthetic knowledge-base documents for scale tests (the seed's 10,000 documents / 50,000 pages).

Documents look like the starter KB: the same `Key: value` header (as Markdown front matter),
numbered sections and subsections, narrative paragraphs long enough that the chunker must split at
sentence boundaries, `Recommendation N.N.N (...)` paragraphs and, in payer policies, `Criterion N:`
paragraphs under `2 Coverage criteria`.  The text is assembled from templates and clinical vocabulary;
it reads like a guideline but is not clinical advice and is never part of the starter KB.

Generation is streaming and deterministic: document `i` of seed `s` depends only on (s, i), so any
slice can be regenerated alone, and Document-Ids (`syn-<seed>-<i>-<topic>`) are unique within a seed.
`python -m careflow.kb.synthetic FOLDER --docs N --seed S --pages P` writes a corpus and prints docs/s.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

WORDS_PER_PAGE = 500

CONDITIONS = (
    "community-acquired pneumonia", "sepsis", "septic shock", "venous thromboembolism", "pulmonary embolism",
    "deep vein thrombosis", "diabetic ketoacidosis", "hyperkalaemia", "hyponatraemia", "acute kidney injury",
    "chronic kidney disease", "heart failure with reduced ejection fraction", "atrial fibrillation",
    "acute coronary syndrome", "COPD exacerbation", "asthma exacerbation", "acute ischaemic stroke",
    "upper gastrointestinal bleeding", "cellulitis", "pyelonephritis", "Clostridioides difficile infection",
    "alcohol withdrawal", "delirium", "hypoglycaemia", "hypertensive emergency", "cirrhosis",
    "spontaneous bacterial peritonitis", "bacterial meningitis", "osteomyelitis", "infective endocarditis",
    "rheumatoid arthritis", "knee osteoarthritis", "low back pain", "type 2 diabetes mellitus", "obesity",
    "anaemia", "thrombocytopenia", "pancreatitis", "syncope", "migraine",
)  # fmt: skip
DRUGS = (
    ("ceftriaxone", "1 g IV once daily"), ("azithromycin", "500 mg daily"),
    ("piperacillin-tazobactam", "4.5 g IV every 6 hours"), ("cefepime", "2 g IV every 8 hours"),
    ("vancomycin", "15 mg/kg IV every 12 hours"),
    ("enoxaparin", "40 mg subcutaneously daily"), ("apixaban", "5 mg twice daily"), ("rivaroxaban",
    "20 mg daily with food"), ("warfarin", "5 mg daily"), ("heparin", "80 units/kg bolus"), ("furosemide",
    "40 mg IV twice daily"), ("metoprolol succinate", "25 mg daily"), ("lisinopril", "10 mg daily"),
    ("spironolactone", "25 mg daily"), ("empagliflozin", "10 mg daily"), ("metformin", "500 mg twice daily"),
    ("insulin glargine", "0.2 units/kg daily"), ("insulin lispro", "4 units with meals"), ("prednisone",
    "40 mg daily"), ("albuterol", "2.5 mg nebulised every 4 hours"), ("ondansetron", "4 mg IV every 8 hours"),
    ("pantoprazole", "40 mg IV twice daily"), ("octreotide", "50 mcg/h infusion"), ("lorazepam",
    "1 mg IV as needed"), ("haloperidol", "0.5 mg as needed"), ("acetaminophen", "650 mg every 6 hours"),
    ("oxycodone", "5 mg every 4 hours as needed"), ("methotrexate", "15 mg weekly"), ("adalimumab",
    "40 mg every other week"), ("semaglutide", "0.25 mg weekly"), ("amlodipine", "5 mg daily"),
    ("atorvastatin", "80 mg daily"), ("clopidogrel", "75 mg daily"),
    ("magnesium sulfate", "2 g IV over 2 hours"),
    ("potassium chloride", "40 mmol orally"), ("thiamine", "100 mg IV daily"), ("nitrofurantoin",
    "100 mg twice daily"), ("doxycycline", "100 mg twice daily"), ("levofloxacin", "750 mg daily"),
)  # fmt: skip
POPULATIONS = (
    "older adults", "patients with renal impairment", "pregnant patients", "patients with hepatic impairment",
    "patients with a penicillin allergy", "patients on dialysis", "critically ill patients",
    "patients with obesity", "patients with heart failure", "immunocompromised patients", "adults",
)  # fmt: skip
LABS = (
    ("serum potassium", "mmol/L", (3.0, 6.5)), ("serum sodium", "mmol/L", (120, 150)),
    ("creatinine clearance", "mL/min", (15, 90)), ("haemoglobin", "g/dL", (6.0, 10.0)),
    ("platelet count", "x10^3/microL", (20, 150)), ("lactate", "mmol/L", (2.0, 4.0)),
    ("HbA1c", "%", (6.5, 10.0)), ("INR", "", (1.5, 4.5)), ("glucose", "mg/dL", (70, 250)),
    ("eGFR", "mL/min/1.73 m2", (15, 60)), ("troponin", "ng/L", (14, 100)), ("BMI", "kg/m2", (25, 45)),
)  # fmt: skip
INTERVALS = (
    "every 4 hours", "every 6 hours", "daily", "every shift", "at 48 to 72 hours", "weekly", "hourly",
)  # fmt: skip
STRENGTHS = (
    "strong, high-quality evidence", "strong, moderate-quality evidence", "conditional, low-quality evidence",
    "conditional, moderate-quality evidence", "strong, low-quality evidence", "best practice statement",
)  # fmt: skip
ORGANIZATIONS = (
    "Synthetic Clinical Guidelines Committee", "Synthetic Pharmacy & Therapeutics Committee",
    "Synthetic Regional Health Network", "Synthetic Nursing Practice Council", "Synthetic Health Plan UM",
)  # fmt: skip
DOC_TYPES = ("guideline", "guideline", "protocol", "protocol", "formulary", "payer_policy")
ASPECTS = (
    "Diagnosis and Initial Management", "Inpatient Treatment", "Monitoring and Follow-Up", "Risk Assessment",
    "Dosing and Administration", "Escalation and Transfer", "Transitions of Care", "Prevention",
)  # fmt: skip
SECTION_NAMES = (
    "Scope and definitions", "Assessment", "Initial management", "Pharmacological therapy", "Dosing",
    "Monitoring", "Special populations", "Escalation of care", "Discharge and follow-up",
    "Safety considerations",
    "Documentation", "Quality measures", "Contraindications", "Drug interactions", "Patient education",
)  # fmt: skip
SUBSECTION_NAMES = (
    "Indications", "Choice of agent", "Dose adjustment", "Timing", "Laboratory monitoring", "Duration",
    "Adverse effects", "Renal impairment", "Hepatic impairment", "Pregnancy", "Older adults", "Reassessment",
    "Nursing actions", "Pharmacist review", "Exceptions",
)  # fmt: skip

_NARRATIVE = (
    "In {pop}, {cond} is assessed with a focused history, examination and a {lab} measurement {interval}.",
    "{drug_cap} {dose} is commonly used for {cond}, but the dose is reviewed in {pop}.",
    "A {lab} above {value} {unit} is associated with a higher risk of complications in {cond}.",
    "The treating team documents the indication, the planned duration and the review date for {drug}.",
    "Observational data suggest that early recognition of {cond} shortens the length of stay.",
    "Nurses escalate to the responsible clinician when the {lab} changes by more than {value} {unit}.",
    "{drug_cap} is avoided in {pop} unless the expected benefit clearly outweighs the risk.",
    "Pharmacists review interacting medications and adjust {drug} when the {lab} falls below {value} {unit}.",
    "The evidence for {drug} in {cond} comes mainly from randomised trials in {pop}.",
    "Local audit showed variation in the timing of {drug}, which this document aims to reduce.",
    "Reassessment {interval} allows therapy to be narrowed, stopped or switched to an oral route.",
    "Patients and families receive written information about {cond} and the warning signs to report.",
    "When {drug} cannot be used, an alternative from the formulary is chosen with the pharmacist.",
    "The {lab} is repeated {interval} until two consecutive values are within the target range.",
    "Delays in recognising {cond} in {pop} were the most common finding of the last safety review.",
    "A {lab} of {value} {unit} or more prompts a review of the current dose of {drug}.",
    "Most {pop} with {cond} improve within 48 to 72 hours of starting appropriate therapy.",
    "The order set pre-selects {drug} {dose}; prescribers can change the dose after review.",
)  # fmt: skip
_RECOMMENDATION = (
    "In {pop} with {cond}, give {drug} {dose} and reassess {interval}.",
    "Check the {lab} before starting {drug}, and withhold it when the value is above {value} {unit}.",
    "Do not use {drug} routinely for {cond}; reserve it for {pop} after specialist review.",
    "Reduce the dose of {drug} in {pop} and monitor the {lab} {interval}.",
    "Escalate care for {cond} when the {lab} is below {value} {unit} despite initial treatment.",
)  # fmt: skip
_CRITERIA = (
    "The patient has a documented diagnosis of {cond} recorded with an ICD-10-CM code.",
    "The patient has tried {drug} for 3 months or more without an adequate response, or cannot take it.",
    "The most recent {lab}, measured within the past 6 months, is {value} {unit} or higher.",
    "The request is made by, or in consultation with, a specialist in the relevant field.",
    "The patient is not receiving {drug} in combination with another agent of the same class.",
    "The clinical record documents the baseline severity and the treatment goal.",
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticDocument:
    filename: str
    text: str

    @property
    def document_id(self) -> str:
        return self.filename.rsplit(".", 1)[0]


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())[:40]


class _Writer:
    """Fills templates for one document from its own Random."""

    def __init__(self, rng: random.Random, cond: str) -> None:
        self.rng = rng
        self.cond = cond

    def fill(self, template: str) -> str:
        rng = self.rng
        drug, dose = rng.choice(DRUGS)
        lab, unit, (low, high) = rng.choice(LABS)
        value = round(rng.uniform(low, high), 1)
        return template.format(
            pop=rng.choice(POPULATIONS), cond=self.cond if rng.random() < 0.7 else rng.choice(CONDITIONS),
            drug=drug, drug_cap=drug[0].upper() + drug[1:], dose=dose, lab=lab, unit=unit,
            value=f"{value:g}", interval=rng.choice(INTERVALS),
        )  # fmt: skip

    def paragraph(self, sentences: int) -> str:
        return " ".join(self.fill(self.rng.choice(_NARRATIVE)) for _ in range(sentences))


def _document(seed: int, index: int, pages: int) -> SyntheticDocument:
    rng = random.Random(f"{seed}:{index}")  # noqa: S311 - synthetic text, reproducible by design
    cond = rng.choice(CONDITIONS)
    doc_type = rng.choice(DOC_TYPES)
    doc_id = f"syn-{seed}-{index:06d}-{_slug(cond)}"
    title = f"{cond[0].upper()}{cond[1:]}: {rng.choice(ASPECTS)}"
    if doc_type == "formulary":
        title = f"Formulary Monograph: {rng.choice(DRUGS)[0].capitalize()} for {cond}"
    elif doc_type == "payer_policy":
        title = f"Prior Authorization Policy: {rng.choice(DRUGS)[0].capitalize()} for {cond}"
    effective = date(2019, 1, 1) + timedelta(days=rng.randrange(2500))
    out = [
        "---", f"Document-Id: {doc_id}", f"Title: {title}", f"Organization: {rng.choice(ORGANIZATIONS)}",
        f"Effective-Date: {effective.isoformat()}", f"Doc-Type: {doc_type}", f"Version: {rng.randint(1, 9)}",
        "---", "",
    ]  # fmt: skip
    w = _Writer(rng, cond)
    target = pages * WORDS_PER_PAGE
    words = 0
    section = 0
    if doc_type == "payer_policy":
        section = 2
        out += ["## 1 Policy overview", "", w.paragraph(5), "", "## 2 Coverage criteria", ""]
        for n in range(1, rng.randint(3, 6) + 1):
            out += [f"Criterion {n}: {w.fill(rng.choice(_CRITERIA))}", ""]
        words += sum(len(line.split()) for line in out)
    names = rng.sample(SECTION_NAMES, len(SECTION_NAMES))
    while words < target:
        section += 1
        block = [f"## {section} {names[(section - 1) % len(names)]}", "", w.paragraph(rng.randint(2, 4)), ""]
        for sub in range(1, rng.randint(2, 3) + 1):
            block += [f"### {section}.{sub} {rng.choice(SUBSECTION_NAMES)}", ""]
            # one long narrative block in three (several sentences: the chunker must split it)
            for _ in range(rng.choice((1, 1, 3))):
                block += [w.paragraph(rng.randint(4, 9)), ""]
            for rec in range(1, rng.randint(1, 2) + 1):
                text = w.fill(rng.choice(_RECOMMENDATION))
                block += [f"Recommendation {section}.{sub}.{rec} ({rng.choice(STRENGTHS)}): {text}", ""]
            if words + sum(len(line.split()) for line in block) >= target:
                break
        words += sum(len(line.split()) for line in block)
        out += block
    return SyntheticDocument(f"{doc_id}.md", "\n".join(out))


def generate_documents(n: int, seed: int, pages_per_doc: int = 5) -> Iterator[SyntheticDocument]:
    """Yield n documents of about pages_per_doc x 500 words each, one at a time."""
    for index in range(n):
        yield _document(seed, index, pages_per_doc)


def write_corpus(folder: Path, n: int, seed: int, pages: int = 5) -> int:
    """Write n Markdown documents into folder (created if missing); returns the number written."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for doc in generate_documents(n, seed, pages):
        (folder / doc.filename).write_text(doc.text, encoding="utf-8")
        count += 1
    return count


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write a synthetic knowledge-base corpus.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pages", type=int, default=5)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    written = write_corpus(args.folder, args.docs, args.seed, args.pages)
    elapsed = time.perf_counter() - started
    pages = written * args.pages
    print(f"{written} documents, {pages} pages in {elapsed:.1f} s ({written / elapsed:.0f} docs/s)")


if __name__ == "__main__":
    main(sys.argv[1:])

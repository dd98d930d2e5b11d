"""Synthetic clinical encounters for ambient notes: a scripted two-party dialogue for a synthetic EHR
patient (their name, birth date, conditions and medications), with what a note of it must contain.

The script is the reference transcript (speaker turns known), the expected diagnoses are the ICD-10-CM
codes of the conditions the visit discusses, and the patient's identifiers are planted where a real
visit has them (greeting, date-of-birth check) so de-identification is exercised every time.  The same
text in the diarized form `[doctor] ... [patient] ...` is what `careflow ambient submit --transcript`
takes; `parse_diarized` reads it back (and refuses text without speaker tags).

Deterministic from the seed; no PHI (the patients are synthetic).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from careflow.fhir import codes as c
from careflow.models.ambient import Specialty

WORDS_PER_MINUTE = 150  # espeak-ng's default speaking rate: the script's length for a target duration


class Speaker(StrEnum):
    DOCTOR = "doctor"
    PATIENT = "patient"


# Which of the synthetic EHR's conditions each specialty's visit is about (in order of preference), and
# the complaint that opens it when the patient has none of them.
FOCUS: dict[Specialty, tuple[str, ...]] = {
    Specialty.PRIMARY_CARE: ("diabetes", "hypertension", "hyperlipidemia", "obesity", "ckd3", "copd"),
    Specialty.CARDIOLOGY: ("heart_failure", "afib", "hypertension", "hyperlipidemia"),
    Specialty.ORTHOPEDICS: ("knee_oa", "low_back_pain", "rheumatoid_arthritis"),
    Specialty.EMERGENCY: ("copd", "heart_failure", "afib", "diabetes"),
}
PRESENTING: dict[Specialty, str] = {
    Specialty.PRIMARY_CARE: "hypertension",
    Specialty.CARDIOLOGY: "hypertension",
    Specialty.ORTHOPEDICS: "low_back_pain",
    Specialty.EMERGENCY: "chest_pain",
}
COMPLAINTS: dict[str, str] = {
    "diabetes": "my sugars have been running high in the mornings, around two hundred",
    "hypertension": "my blood pressure readings at home have been high and I get headaches",
    "hyperlipidemia": "I wanted to talk about my cholesterol results",
    "obesity": "I have been trying to lose weight but it is not coming off",
    "ckd3": "my kidney numbers were off at the last check",
    "copd": "I get short of breath walking up the stairs and I cough in the mornings",
    "heart_failure": "my ankles are swollen and I get breathless lying flat",
    "afib": "my heart has been racing and fluttering on and off",
    "knee_oa": "my right knee hurts when I walk and it is stiff in the morning",
    "low_back_pain": "my lower back has been aching for three weeks",
    "rheumatoid_arthritis": "my hands are stiff and swollen in the mornings",
    "chest_pain": "I have had a pressure in my chest since this morning",
}
EXAM: dict[str, str] = {
    "diabetes": "Your feet have normal sensation and no sores.",
    "hypertension": "Your blood pressure today is one fifty two over ninety four.",
    "hyperlipidemia": "Your last LDL was one hundred sixty.",
    "obesity": "Your weight today is two hundred and twelve pounds.",
    "ckd3": "Your creatinine was one point six last month.",
    "copd": "I hear some wheezing at both lung bases and your oxygen is ninety three percent.",
    "heart_failure": "There is pitting edema to the mid shin on both legs.",
    "afib": "Your pulse is irregular at about one hundred and ten.",
    "knee_oa": "The right knee has crepitus and the range of motion is reduced.",
    "low_back_pain": "The straight leg raise is negative and strength is normal.",
    "rheumatoid_arthritis": "There is swelling of the small joints of both hands.",
    "chest_pain": "The ECG shows sinus rhythm without ST changes.",
}
PLAN: dict[str, str] = {
    "diabetes": "We will check an A1c today and adjust your diabetes medicine if it is above eight.",
    "hypertension": "Keep a blood pressure log for two weeks and we will review it.",
    "hyperlipidemia": "Continue the statin and we will repeat the lipid panel in three months.",
    "obesity": "I will refer you to the nutrition clinic.",
    "ckd3": "We will repeat the kidney function tests and avoid anti inflammatory painkillers.",
    "copd": "Use the inhaler every day and we will get a chest x ray.",
    "heart_failure": "Weigh yourself every morning and call if you gain more than three pounds.",
    "afib": "Continue the blood thinner and we will arrange a heart monitor.",
    "knee_oa": "Start physical therapy and we can discuss an injection if it does not help.",
    "low_back_pain": "Stay active, use heat, and come back if you get numbness or weakness.",
    "rheumatoid_arthritis": "We will check inflammatory markers and see rheumatology.",
    "chest_pain": "We will repeat the troponin in three hours and keep you on the monitor.",
}
# The physician's spoken assessment, in the words a note codes from.
ASSESS: dict[str, str] = {
    "diabetes": "Your type 2 diabetes is not at goal.",
    "hypertension": "Your hypertension is not well controlled.",
    "hyperlipidemia": "Your hyperlipidemia needs the statin to continue.",
    "obesity": "Obesity is putting strain on your heart and joints.",
    "ckd3": "This is chronic kidney disease, stage three.",
    "copd": "Your chronic obstructive pulmonary disease is worse this month.",
    "heart_failure": "Your heart failure is causing fluid to build up.",
    "afib": "Your atrial fibrillation is not rate controlled.",
    "knee_oa": "This is osteoarthritis of the right knee.",
    "low_back_pain": "This is mechanical low back pain.",
    "rheumatoid_arthritis": "Your rheumatoid arthritis is active.",
    "chest_pain": "The chest pain could be your heart, so we need to rule that out.",
}
FILLER: tuple[tuple[str, str], ...] = (
    ("How have you been sleeping?", "Not too badly, maybe six hours most nights."),
    ("Any fevers, chills or weight loss?", "No fevers. My weight has been about the same."),
    ("Do you smoke or drink alcohol?", "I stopped smoking years ago. A glass of wine at weekends."),
    ("Who is at home with you?", "My daughter lives nearby and checks on me most days."),
    ("Any problems getting your prescriptions?", "No, the pharmacy delivers them."),
    ("Are you able to do your usual activities?", "Mostly, though I rest more than I used to."),
    ("Any dizziness or falls?", "A little dizzy when I stand up quickly, no falls."),
    ("How is your appetite?", "It is fine, I eat three meals a day."),
)


@dataclass(frozen=True)
class Turn:
    speaker: Speaker
    text: str


@dataclass(frozen=True)
class Encounter:
    specialty: Specialty
    patient_name: str
    birth_date: date
    turns: tuple[Turn, ...]
    discussed: tuple[str, ...]  # condition keys the visit is about
    medications: tuple[str, ...]  # medication keys mentioned

    @property
    def expected_codes(self) -> list[str]:
        """The ICD-10-CM codes a note of this visit should propose."""
        return [c.CONDITIONS[k].icd10 for k in self.discussed]

    @property
    def words(self) -> int:
        return sum(len(t.text.split()) for t in self.turns)

    @property
    def minutes(self) -> float:
        return self.words / WORDS_PER_MINUTE

    def diarized(self) -> str:
        return "\n".join(f"[{t.speaker.value}] {t.text}" for t in self.turns)


def _spoken_date(d: date) -> str:
    return f"{d.strftime('%B')} {d.day}, {d.year}"


def encounter(
    patient: dict[str, Any],
    conditions: list[str],
    medications: list[str],
    specialty: Specialty,
    minutes: float,
    seed: int,
) -> Encounter:
    """A visit of about `minutes` spoken minutes for the FHIR `patient`, whose chronic condition keys and
    medication keys (careflow.fhir.codes) are given."""
    rng = random.Random(f"encounter:{seed}")  # noqa: S311 - synthetic, reproducible by design
    name = patient["name"][0]
    given, family = name["given"][0], name["family"]
    born = date.fromisoformat(patient["birthDate"])
    focus = [k for k in FOCUS[specialty] if k in conditions][:2] or [PRESENTING[specialty]]
    meds = [m for m in medications if any(m in c.INDICATIONS.get(k, ()) for k in focus)]
    say: list[Turn] = []

    def doctor(text: str) -> None:
        say.append(Turn(Speaker.DOCTOR, text))

    def patient_says(text: str) -> None:
        say.append(Turn(Speaker.PATIENT, text))

    doctor(f"Good morning, I am the {specialty.value.replace('-', ' ')} doctor. Are you {given} {family}?")
    patient_says(f"Yes, that's me, {given} {family}.")
    doctor("Can you confirm your date of birth for me?")
    patient_says(f"It's {_spoken_date(born)}.")
    doctor("Thank you. What brings you in today?")
    patient_says(COMPLAINTS[focus[0]].capitalize() + ".")
    for key in focus[1:]:
        doctor("Anything else bothering you?")
        patient_says("Also, " + COMPLAINTS[key] + ".")
    for m in meds:
        med = c.MEDICATIONS[m]
        doctor(f"Are you still taking the {med.display}, {med.dosage}?")
        patient_says(
            rng.choice(
                [f"Yes, the {med.display}, every day.", f"Most days, I forget the {med.display} sometimes."]
            )
        )
    target = minutes * WORDS_PER_MINUTE
    fillers = list(FILLER)
    rng.shuffle(fillers)
    while sum(len(t.text.split()) for t in say) < target * 0.7 and fillers:
        q, a = fillers.pop()
        doctor(q)
        patient_says(a)
    doctor("Let me examine you. " + " ".join(EXAM[k] for k in focus))
    doctor("My assessment: " + " ".join(ASSESS[k] for k in focus))
    doctor("Here is the plan. " + " ".join(PLAN[k] for k in focus))
    patient_says("That sounds good. Thank you, doctor.")
    while sum(len(t.text.split()) for t in say) < target * 0.9:
        key = rng.choice(focus)
        doctor(f"To go over it again: {PLAN[key]}")
        patient_says(rng.choice(["Okay, I understand.", "Yes, I will do that.", "Got it, thank you."]))
    return Encounter(specialty, f"{given} {family}", born, tuple(say), tuple(focus), tuple(meds))


def chart(resources: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str], list[str]]:
    """A synthetic patient's Patient resource, condition keys and medication keys, from their EHR entries
    (what `encounter` scripts a visit from)."""
    by_icd = {v.icd10: k for k, v in c.CONDITIONS.items()}
    by_rxnorm = {m.rxnorm: k for k, m in c.MEDICATIONS.items()}
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    conditions = sorted({
        by_icd[cd["code"]]
        for r in resources if r["resourceType"] == "Condition"
        for cd in r["code"]["coding"] if cd["code"] in by_icd
    })  # fmt: skip
    meds = sorted({
        by_rxnorm[cd["code"]]
        for r in resources if r["resourceType"] == "MedicationRequest"
        for cd in r["medicationCodeableConcept"]["coding"] if cd["code"] in by_rxnorm
    })  # fmt: skip
    return patient, conditions, meds


_TAG = re.compile(r"\[(doctor|patient|clinician|physician)\]\s*", re.IGNORECASE)


def parse_diarized(text: str) -> list[Turn]:
    """`[doctor] ... [patient] ...` (one or many turns per line) as turns; a text without a single speaker
    tag is refused with a message that says what the format is."""
    parts = _TAG.split(text)
    if len(parts) < 3:
        raise ValueError(
            "a diarized transcript labels every turn with its speaker: '[doctor] ...' or '[patient] ...'"
        )
    if parts[0].strip():
        raise ValueError(f"text before the first speaker tag: {parts[0].strip()[:40]!r}")
    turns = []
    for tag, said in zip(parts[1::2], parts[2::2], strict=True):
        speaker = Speaker.PATIENT if tag.lower() == "patient" else Speaker.DOCTOR
        if said.strip():
            turns.append(Turn(speaker, " ".join(said.split())))
    return turns

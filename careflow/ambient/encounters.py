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
# A long visit's review of systems: each symptom asked once, answered in one of several ways, so a
# 15-minute visit is as varied as a real one (a script that repeats itself is not what a badge hears,
# and Whisper's repetition guard rightly drops text that loops).
SYMPTOMS = (
    "headaches", "dizziness", "nausea", "heartburn", "constipation", "trouble sleeping", "joint pain",
    "a cough", "fevers", "night sweats", "blurred vision", "numbness in your feet", "palpitations",
    "trouble swallowing", "blood in your stool", "a rash", "low mood", "memory problems", "falls",
    "trouble passing urine", "tiredness", "muscle cramps", "ringing in your ears", "leg swelling",
    "loss of appetite", "shortness of breath at night", "pain when you walk", "itching", "dry mouth",
    "wheezing", "sore throat", "anxiety", "back stiffness", "cold hands", "bruising", "weight gain",
)  # fmt: skip
WHEN = ("in the morning", "in the evening", "after meals", "at night", "when I climb stairs", "on weekends")
COUNTS = ("once", "twice", "three times", "a few times", "most days")
PERIODS = ("this week", "in the last month", "since the summer", "over the last two weeks")
LIFESTYLE = (
    ("How many days a week do you get out for a walk?", "About {n} days, for twenty minutes or so."),
    ("What did you have for breakfast today?", "Oatmeal with some fruit and a cup of coffee."),
    ("Are you still working?", "Part time, {n} mornings a week at the library."),
    ("How much water do you drink in a day?", "Maybe {n} glasses, I should drink more."),
    ("Have you had your flu shot this year?", "Yes, at the pharmacy last month."),
    ("Do you check your blood pressure at home?", "Now and then, the numbers vary a lot."),
    ("Any trips planned?", "We are visiting my sister in {n} weeks."),
    ("How are things at home?", "Busy, my grandson stays with us on Tuesdays."),
)  # fmt: skip
NUMBERS = ("two", "three", "four", "five")
REMEDIES = (
    "Resting",
    "A warm shower",
    "Sitting up",
    "Drinking water",
    "Taking a short walk",
    "Nothing really",
)
HISTORY = (
    ("Have you had any operations?", "My gallbladder came out about ten years ago."),
    ("Does anyone in your family have heart problems?", "My father had a heart attack in his sixties."),
    ("Any allergies to medicines?", "Penicillin gives me a rash."),
    ("Have you been in the hospital this year?", "Not this year, thankfully."),
    ("Did your mother have diabetes?", "She did, in her later years."),
    ("Any history of cancer in the family?", "My aunt had breast cancer."),
    ("Do you use any herbal supplements?", "Just vitamin D and fish oil."),
    ("When was your last eye exam?", "Last spring, the glasses are new."),
)  # fmt: skip
COUNSEL = (
    "Let us talk about food for a moment. Try to fill half the plate with vegetables, choose whole grains, "
    "and keep fried food and sweets for special occasions. Small changes you can keep are better than big "
    "ones you cannot.",
    "Exercise matters as much as any pill. Aim for thirty minutes of walking on most days; it can be split "
    "into ten minute pieces, and a flat route is fine to start with.",
    "Sleep is part of the treatment too. Keep the same bedtime, put the phone away an hour before, and "
    "avoid coffee after lunch. Tell me if you snore loudly or stop breathing at night.",
    "Please bring every bottle you take to the next visit, including vitamins and anything from the "
    "pharmacy shelf, so we can check for interactions and remove anything you no longer need.",
    "If you ever have crushing chest pain, sudden weakness on one side, or trouble speaking, call an "
    "ambulance right away rather than waiting for an appointment.",
    "To prevent falls at home, keep the hallways lit at night, remove loose rugs, and use the handrail on "
    "the stairs. A grab bar in the shower is worth the cost.",
    "Stress can raise your numbers as well. Some people find a short walk after dinner or a few minutes of "
    "slow breathing helps, and the clinic has a counselor if you would like to talk to someone.",
    "You are due for a few screening tests this year. The nurse will go through them with you and book "
    "the ones you want on your way out.",
    "The patient portal shows your results as soon as they are ready, and you can send us a message there "
    "instead of waiting on the phone.",
    "If cost is ever a problem with any of your prescriptions, tell us, because there is usually a cheaper "
    "option that works just as well.",
)
PATIENT_ASKS = (
    ("Is it safe for me to keep exercising?", "Yes, walking is good for you; stop if you get chest pain."),
    ("Should I cut down on salt?", "Yes, less salt helps your blood pressure and any swelling."),
    ("Can I still have a glass of wine?", "One glass now and then is fine with your medicines."),
    ("Will I need this medicine for life?", "Probably for a long time; we will review it every year."),
    ("Are the side effects dangerous?", "Most are mild; call us if you notice anything new."),
    ("How soon will I feel better?", "Most people notice a change within two to four weeks."),
    ("Can I take ibuprofen for the aches?", "Acetaminophen is the safer choice for you."),
    ("Do I need to fast before the blood test?", "Yes, nothing but water after midnight."),
)  # fmt: skip


def _review_of_systems(rng: random.Random) -> list[tuple[str, str]]:
    """Questions and answers in an order no two visits share; a symptom the patient has is followed up."""
    pairs: list[tuple[str, str]] = []
    for sym in rng.sample(SYMPTOMS, len(SYMPTOMS)):
        if rng.random() < 0.5:
            pairs.append((f"Any {sym}?", rng.choice([f"No, no {sym}.", f"No, I have not had {sym}."])))
            continue
        pairs.append((f"Any {sym}?", f"Some {sym}, {rng.choice(COUNTS)} {rng.choice(PERIODS)}, "
                                     f"mostly {rng.choice(WHEN)}."))  # fmt: skip
        pairs.append(("When did that start?", f"About {rng.choice(NUMBERS)} weeks ago."))
        pairs.append(
            ("How bad is it, from one to ten?", f"Maybe a {rng.choice(NUMBERS)}, it comes and goes.")
        )
        pairs.append(("Does anything make it better?", f"{rng.choice(REMEDIES)} helps a little."))
    pairs += [(q, a.format(n=rng.choice(NUMBERS))) for q, a in (*LIFESTYLE, *HISTORY)]
    rng.shuffle(pairs)
    return pairs


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
    fillers += _review_of_systems(rng)
    while sum(len(t.text.split()) for t in say) < target * 0.85 and fillers:
        q, a = fillers.pop(0)
        doctor(q)
        patient_says(a)
    doctor("Let me examine you. " + " ".join(EXAM[k] for k in focus))
    doctor("My assessment: " + " ".join(ASSESS[k] for k in focus))
    doctor("Here is the plan. " + " ".join(PLAN[k] for k in focus))
    patient_says("That sounds good. Thank you, doctor.")
    asks, counsel = list(PATIENT_ASKS), list(COUNSEL)
    rng.shuffle(asks)
    rng.shuffle(counsel)
    while sum(len(t.text.split()) for t in say) < target * 0.9 and (asks or fillers or counsel):
        if asks:
            q, a = asks.pop()
            patient_says(q)
            doctor(a)
        if counsel:
            doctor(counsel.pop())
            patient_says(
                rng.choice(["Okay, that makes sense.", "I will try that.", "Good to know, thank you."])
            )
        if fillers:
            q, a = fillers.pop(0)
            doctor("One more thing. " + q)
            patient_says(a)
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

"""A synthetic EHR note export: what a hospital's export of signed clinical notes looks like, made from
the synthetic EHR's own patients, with every identifier planted at a known position (so the
de-identification can be measured, not guessed) and the defects a real export has: notes too short
to learn from, notes cut off, free text without SOAP sections, copy-forward near-duplicates, and
canary strings (random secrets) whose reproduction by a trained model is the memorization audit.

Deterministic in (seed, count): the same export every time.  No Temporal here.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from careflow import deid
from careflow.ambient.encounters import chart
from careflow.fhir import codes as c
from careflow.fhir.synthetic import patient_bundle
from careflow.finetune import phrases

AS_OF = date(2026, 11, 1)
NOTES_PER_PATIENT = 4
CANARY_PREFIX = "Records office access code"


@dataclass(frozen=True)
class Planted:
    """An identifier put into a note on purpose: its kind and where it is."""

    kind: deid.Kind
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class ExportedNote:
    note_id: str
    patient: dict[str, Any]  # the EHR's Patient resource: what de-identification knows of this patient
    age: int
    sex: str
    payer: str
    conditions: tuple[str, ...]
    medications: tuple[str, ...]
    text: str
    planted: tuple[Planted, ...] = ()
    canary: str | None = None  # the secret planted in this note
    defect: str | None = None  # what the export got wrong on purpose (the filter's expected verdict)
    copy_of: str | None = None  # a copy-forward of that note (the dedup's expected verdict)


@dataclass
class _Writer:
    parts: list[str] = field(default_factory=list)
    planted: list[Planted] = field(default_factory=list)
    at: int = 0

    def say(self, text: str) -> None:
        self.parts.append(text)
        self.at += len(text)

    def plant(self, kind: deid.Kind, text: str) -> None:
        self.planted.append(Planted(kind, self.at, self.at + len(text), text))
        self.say(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _date(rng: random.Random, d: date) -> str:
    month = deid.MONTHS[d.month - 1].capitalize()
    return rng.choice([d.isoformat(), f"{d.month}/{d.day}/{d.year}", f"{month} {d.day}, {d.year}"])


def _note(rng: random.Random, n: _Patient, visit: date, canary: str | None, headings: bool = True) -> _Writer:
    """One SOAP note with the patient's identifiers planted where clinicians write them (`headings`
    False: the same note as free text, the defect a quality filter must catch)."""
    w, p = _Writer(), n.patient
    name = p["name"][0]
    given, family = name["given"][0], name["family"]
    conds = list(n.conditions or ("hypertension",))
    rng.shuffle(conds)
    conds = conds[: rng.randint(1, 3)]
    shown = ", ".join(c.CONDITIONS[k].snomed_display.lower() for k in conds)

    def section(heading: str) -> None:
        w.say(heading if headings else " " if w.at else "")

    section("SUBJECTIVE: ")
    if rng.random() < 0.5:
        w.plant(deid.Kind.PATIENT, f"{given} {family}")
    else:
        w.say("Ms. " if n.sex == "female" else "Mr. ")
        w.plant(deid.Kind.PATIENT, family)
    w.say(f" is a {n.age}-year-old {rng.choice([n.sex, 'patient'])} seen on ")
    w.plant(deid.Kind.DATE, _date(rng, visit))
    w.say(" for " + phrases.fill(rng, rng.choice(phrases.REASONS), conds=shown) + ". ")
    pools = [phrases.SYMPTOMS.get(k, ["no new symptoms"]) for k in conds]
    said = [phrases.fill(rng, x) for pool in pools for x in rng.sample(pool, min(2, len(pool)))]
    rng.shuffle(said)
    w.say(" ".join(x[0].upper() + x[1:] + "." for x in said))
    meds = [c.MEDICATIONS[m] for m in n.medications[:4]]
    if meds:
        w.say(rng.choice([" Taking ", " Current medications: ", " Medications: "]))
        w.say("; ".join(f"{m.display} {m.dosage}" for m in meds) + ".")
    w.say(" " + phrases.fill(rng, rng.choice(phrases.SOCIAL)))
    _others(rng, w, given.lower(), family.lower())
    if rng.random() < 0.5:
        w.say(" Lives at ")
        w.plant(deid.Kind.ADDRESS, p["address"][0]["line"][0])
        w.say(rng.choice([" with family.", " alone.", " with a spouse."]))
    section("\nOBJECTIVE: ")
    w.say(
        f"BP {rng.randint(108, 168)}/{rng.randint(60, 100)}, pulse {rng.randint(54, 104)}, "
        f"temperature {round(rng.uniform(36.2, 37.6), 1)}, SpO2 {rng.randint(91, 99)}%. "
    )
    w.say(" ".join(rng.sample(phrases.EXAM, rng.randint(2, 4))))
    labs = [phrases.fill(rng, phrases.LABS[k]) for k in conds if k in phrases.LABS]
    if labs:
        w.say(" Labs: " + ", ".join(labs) + ".")
    section("\nASSESSMENT: ")
    w.say(
        " ".join(
            f"{i}. {c.CONDITIONS[k].icd10_display} ({c.CONDITIONS[k].icd10}), {rng.choice(phrases.STATUS)}."
            for i, k in enumerate(conds, 1)
        )
    )
    section("\nPLAN: ")
    w.say(" ".join(rng.choice(phrases.PLANS.get(k, ["Continue current care"])) + "." for k in conds))
    extras = rng.sample(phrases.EXTRAS, rng.randint(0, 2))
    w.say("".join(" " + x for x in [*extras, f"Follow up in {rng.choice([2, 3, 4, 6, 8, 12])} weeks."]))
    if canary:
        w.say(f" {CANARY_PREFIX}: {canary}.")
    w.say(" Callback ")
    w.plant(deid.Kind.PHONE, p["telecom"][0]["value"])
    w.say(". MRN ")
    w.plant(deid.Kind.MRN, p["identifier"][0]["value"])
    w.say(", DOB ")
    w.plant(deid.Kind.DOB, _date(rng, date.fromisoformat(p["birthDate"])))
    w.say(".")
    return w


def _others(rng: random.Random, w: _Writer, given: str, family: str) -> None:
    """Identifiers the EHR does not hold for this patient (only patterns can find them)."""
    if rng.random() < 0.4:
        w.say(f" {rng.choice(phrases.RELATIONS).capitalize()} ")
        w.plant(deid.Kind.NAME, f"{rng.choice(phrases.FIRST_NAMES)} {rng.choice(phrases.LAST_NAMES)}")
        w.say(rng.choice(phrases.RELATIVE_DOES))
        if rng.random() < 0.5:
            w.say(", phone ")
            w.plant(
                deid.Kind.PHONE,
                f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04d}",
            )
        w.say(".")
    if rng.random() < 0.3:
        w.say(rng.choice([" Last colonoscopy ", " Last eye exam ", " Flu shot "]))
        w.plant(deid.Kind.DATE, _date(rng, AS_OF - timedelta(days=rng.randint(200, 3000))))
        w.say(".")
    if rng.random() < 0.2:
        w.say(" Portal e-mail ")
        w.plant(deid.Kind.EMAIL, f"{given}.{family}{rng.randint(1, 99)}@example.org")
        w.say(".")


@dataclass(frozen=True)
class _Patient:
    patient: dict[str, Any]
    age: int
    sex: str
    payer: str
    conditions: tuple[str, ...]
    medications: tuple[str, ...]


def _patients(seed: int, count: int) -> list[_Patient]:
    out = []
    for i in range(count):
        profile, bundle = patient_bundle(seed, i, AS_OF)
        patient, conditions, meds = chart([e["resource"] for e in bundle["entry"]])
        age = (AS_OF - profile.birth_date).days // 365
        out.append(_Patient(patient, age, profile.sex, profile.payer, tuple(conditions), tuple(meds)))
    return out


def secret(rng: random.Random) -> str:
    """A canary: random enough that a model can only produce it by having memorized it."""
    a, b = (rng.choice(string.ascii_uppercase) + rng.choice(string.ascii_uppercase) for _ in range(2))
    return f"{a}-{rng.randint(1000, 9999)}-{b}"


def export(seed: int, patients: int, canaries: int = 4) -> list[ExportedNote]:
    """`patients` x NOTES_PER_PATIENT notes: about 8 % defective, about 5 % copy-forward duplicates,
    `canaries` secrets each planted in one note."""
    rng = random.Random(f"notes:{seed}")  # noqa: S311 - synthetic data, reproducible by design
    notes: list[ExportedNote] = []
    people = _patients(seed, patients)
    canary_at = set(
        rng.sample(range(patients * NOTES_PER_PATIENT), min(canaries, patients * NOTES_PER_PATIENT))
    )
    for pi, person in enumerate(people):
        visit = AS_OF - timedelta(days=rng.randint(500, 900))
        for k in range(NOTES_PER_PATIENT):
            index = pi * NOTES_PER_PATIENT + k
            note_id = f"note-{seed}-{index:05d}"
            visit += timedelta(days=rng.randint(20, 120))
            common: dict[str, Any] = {
                "patient": person.patient,
                "age": person.age,
                "sex": person.sex,
                "payer": person.payer,
                "conditions": person.conditions,
                "medications": person.medications,
            }
            previous = notes[-1] if k and notes else None
            if previous and previous.defect is None and previous.copy_of is None and rng.random() < 0.06:
                notes.append(_copy_forward(rng, note_id, previous, visit, common))
                continue
            canary = secret(rng) if index in canary_at else None
            defect = None if canary else _defect(rng)
            w = _note(rng, person, visit, canary, headings=defect != "no-sections")
            text = _spoil(rng, w, defect) if defect in ("too-short", "incomplete") else w.text
            planted = () if defect == "too-short" else tuple(x for x in w.planted if x.end <= len(text))
            notes.append(
                ExportedNote(
                    note_id=note_id, text=text, planted=planted, canary=canary, defect=defect, **common
                )
            )
    return notes


def _defect(rng: random.Random) -> str | None:
    roll = rng.random()
    return (
        "too-short"
        if roll < 0.03
        else "incomplete"
        if roll < 0.06
        else "no-sections"
        if roll < 0.085
        else None
    )


def _spoil(rng: random.Random, w: _Writer, defect: str) -> str:
    if defect == "too-short":
        return rng.choice(["Pt seen. Stable. RTC.", "Seen and examined, doing well.", "Refill sent."])
    return w.text[: w.text.index("\nASSESSMENT: ") + 20]  # incomplete: the export cut it off


def _copy_forward(
    rng: random.Random, note_id: str, previous: ExportedNote, visit: date, common: dict[str, Any]
) -> ExportedNote:
    """The previous note again with a new visit date: what copy-forward documentation looks like."""
    first = previous.planted[1]  # the visit date (the second identifier of every note)
    new_date = _date(rng, visit)
    text = previous.text[: first.start] + new_date + previous.text[first.end :]
    shift = len(new_date) - (first.end - first.start)
    planted = tuple(
        x
        if x.end <= first.start
        else Planted(x.kind, x.start, x.start + len(new_date), new_date)
        if x is first
        else Planted(x.kind, x.start + shift, x.end + shift, x.text)
        for x in previous.planted
    )
    return ExportedNote(note_id=note_id, text=text, planted=planted, copy_of=previous.note_id, **common)


def general_corpus(seed: int, patients: int) -> list[str]:
    """What the locally built base learns language from: another export's notes, de-identified, half of
    them as free text without sections and none with a prompt (it knows the words, not the task)."""
    import re

    out = []
    for i, n in enumerate(export(seed, patients, canaries=0)):
        text = deid.deidentify(n.text, deid.Identifiers.of_patient(n.patient)).text
        out.append(
            text if i % 2 else re.sub(r"\n?(SUBJECTIVE|OBJECTIVE|ASSESSMENT|PLAN): ", " ", text).strip()
        )
    return out

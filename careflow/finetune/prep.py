"""Data preparation for fine-tuning (seed P9, stage 1): an EHR note export in, training examples out.

De-identification (careflow/deid.py: the identifiers the EHR knows for each note's patient, then
patterns; no statistical NER: none ships in a wheel this project can install, and the report says
so), a quality filter (too short, cut off, no SOAP sections), `{prompt, completion}` examples, near-
duplicate removal (embedding cosine above 0.97 with the embedder the knowledge base uses), and a
90/5/5 split by a stable hash of the note id (a note never changes side between runs).

Measured here, not assumed: the share of planted identifiers removed, per kind.  No Temporal here.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from careflow import deid
from careflow.finetune.export import ExportedNote
from careflow.kb.embed import Embed
from careflow.observe.golden import GoldenCase

DUPLICATE_COSINE = 0.97
RARE_SHARE = 0.10  # a diagnosis in fewer than 10 % of the notes is rare (P12: code frequency)
MIN_WORDS = 40
SECTIONS = ("SUBJECTIVE:", "OBJECTIVE:", "ASSESSMENT:", "PLAN:")
SPLITS = (("train", 90), ("validation", 95), ("test", 100))  # cumulative percentages
DEID_METHOD = "ehr-identifiers+patterns (no statistical NER model available)"
GOLDEN_EXPORT = (4242, 20)  # (seed, patients): the note_draft golden set's export, never trained on
GOLDEN_SIZE = 60  # seed P5: 50-100 golden queries per feature


@dataclass(frozen=True)
class Example:
    note_id: str
    prompt: str
    completion: str
    split: str
    canary: str | None = None  # the secret this example's completion carries (the memorization audit)
    groups: dict[str, str] = field(default_factory=dict)  # subgroup attribute -> value (P12)

    def canary_prefix(self) -> str | None:
        """The completion up to its canary secret: what the audit prompts the trained model with."""
        if not self.canary:
            return None
        return self.completion[: self.completion.index(self.canary)]


@dataclass
class PrepReport:
    exported: int = 0
    filtered: dict[str, int] = field(default_factory=dict)  # reason -> notes
    duplicates: int = 0
    duplicates_expected: int = 0  # copy-forwards the export made (that survived the filter)
    duplicates_matched: int = 0  # of the removed, those that were such copies
    splits: dict[str, int] = field(default_factory=dict)
    planted: int = 0
    removed: int = 0
    missed: dict[str, int] = field(default_factory=dict)  # kind -> planted identifiers left in
    canaries_in_train: int = 0
    deid_method: str = DEID_METHOD
    data_hash: str = ""

    @property
    def removed_share(self) -> float:
        return self.removed / self.planted if self.planted else 1.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "removed_share": round(self.removed_share, 5)}


def split_of(note_id: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(note_id.encode()).digest()[:8], "big") % 100
    return next(name for name, upto in SPLITS if bucket < upto)


def defect(text: str) -> str | None:
    """Why a note is not fit to learn from, or None."""
    if len(text.split()) < MIN_WORDS:
        return "too-short"
    at = [text.find(s) for s in SECTIONS]
    if at.count(-1) >= 3:
        return "no-sections"
    if -1 in at or at != sorted(at) or not text.rstrip().endswith((".", "!", "?")):
        return "incomplete"
    return None


def soap_prompt(
    age: int, sex: str, conditions: Sequence[str], medications: Sequence[str], visit: str = "follow-up"
) -> str:
    """The note model's prompt: the encounter context, as training saw it and serving sends it (no
    identifiers: ages over 89 are grouped)."""
    band = "90 or older" if age >= 90 else f"{age}-year-old"
    listed = ", ".join(x.lower() for x in conditions[:3]) or "none"
    meds = ", ".join(medications[:3]) or "none"
    context = f"Patient: {band} {sex}. Conditions: {listed}. Medications: {meds}."
    return f"Write a SOAP note for a {visit} visit. {context}\n"


def prompt_for(note: ExportedNote) -> str:
    """The encounter context the note was written from."""
    from careflow.fhir import codes as c

    conditions = [c.CONDITIONS[k].snomed_display for k in note.conditions[:3]]
    return soap_prompt(
        note.age, note.sex, conditions, [c.MEDICATIONS[m].display for m in note.medications[:3]]
    )


def _groups(note: ExportedNote, rare: set[str]) -> dict[str, str]:
    """The subgroups P12 asks about: age, sex, insurance, how common the patient's diagnoses are."""
    return {
        "age": "65+" if note.age >= 65 else "<65",
        "sex": note.sex,
        "payer": note.payer,
        "diagnoses": "rare" if rare & set(note.conditions) else "common",
    }


def _covered(p: tuple[int, int], spans: Sequence[deid.Replacement]) -> bool:
    return any(r.start <= p[0] and p[1] <= r.end for r in spans)


def prepare(notes: Sequence[ExportedNote], embed: Embed) -> tuple[list[Example], PrepReport]:
    report = PrepReport(exported=len(notes))
    clean: list[tuple[ExportedNote, str]] = []
    for note in notes:
        found = deid.deidentify(note.text, deid.Identifiers.of_patient(note.patient))
        for p in note.planted:
            report.planted += 1
            if _covered((p.start, p.end), found.replacements):
                report.removed += 1
            else:
                report.missed[p.kind.value] = report.missed.get(p.kind.value, 0) + 1
        reason = defect(found.text)
        if reason:
            report.filtered[reason] = report.filtered.get(reason, 0) + 1
            continue
        clean.append((note, found.text))
    kept = _unique(clean, embed, report)
    seen = Counter(k for note, _ in kept for k in note.conditions)
    rare = {k for k, n in seen.items() if n < RARE_SHARE * len(kept)}
    examples = [
        Example(note.note_id, prompt_for(note), text, split_of(note.note_id),
                note.canary if note.canary and note.canary in text else None, _groups(note, rare))
        for note, text in kept
    ]  # fmt: skip
    report.splits = dict(Counter(e.split for e in examples))
    report.canaries_in_train = sum(1 for e in examples if e.canary and e.split == "train")
    report.data_hash = data_hash(examples)
    return examples, report


def _unique(
    clean: list[tuple[ExportedNote, str]], embed: Embed, report: PrepReport
) -> list[tuple[ExportedNote, str]]:
    """Keep a note unless one kept before it is more similar than DUPLICATE_COSINE."""
    ids = {n.note_id for n, _ in clean}
    report.duplicates_expected = sum(1 for n, _ in clean if n.copy_of in ids)
    if not clean:
        return []
    vectors = embed([t for _, t in clean])
    kept: list[int] = []
    for i, (note, _) in enumerate(clean):
        if kept and float(np.max(vectors[kept] @ vectors[i])) > DUPLICATE_COSINE:
            report.duplicates += 1
            report.duplicates_matched += note.copy_of in ids
            continue
        kept.append(i)
    return [clean[i] for i in kept]


def data_hash(examples: Sequence[Example]) -> str:
    """SHA-256 of the examples as trained on: what the registry records as the training data."""
    h = hashlib.sha256()
    for e in sorted(examples, key=lambda x: x.note_id):
        h.update(json.dumps([e.note_id, e.prompt, e.completion, e.split]).encode())
    return h.hexdigest()


def to_jsonl(examples: Sequence[Example]) -> bytes:
    return "".join(json.dumps(asdict(e)) + "\n" for e in examples).encode()


def from_jsonl(data: bytes) -> list[Example]:
    return [Example(**json.loads(line)) for line in data.decode().splitlines() if line.strip()]


def golden_cases(embed: Embed) -> list[GoldenCase]:
    """The note_draft golden set: prompts and de-identified notes of an export no candidate trains on."""
    from careflow.finetune.export import export

    examples, _ = prepare(export(*GOLDEN_EXPORT, canaries=0), embed)
    return [GoldenCase(e.note_id, e.prompt, e.completion) for e in examples[:GOLDEN_SIZE]]

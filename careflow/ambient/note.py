"""The note side of ambient documentation: the specialty templates the SOAP note is drafted against,
the note's text, the FHIR DocumentReference (preliminary until signed) and the physician's review Task,
and the quality measures (word-level edit distance, the per-physician alert).  No Temporal here."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from careflow.fhir import codes as c
from careflow.idempotency import STEP_SYSTEM, step_key
from careflow.llm.tasks import TemplateItem
from careflow.models.ambient import CodeCandidate, Specialty

AI_EXTENSION = f"{c.CAREFLOW}/StructureDefinition"
EDIT_ALERT = 0.30  # a physician whose last notes needed more than 30 % of their words changed
EDIT_WINDOW = 10  # ... over their last 10 signed notes

# What each specialty's note must document (the prompt's template; the offline engine reports gaps).
TEMPLATES: dict[Specialty, tuple[TemplateItem, ...]] = {
    Specialty.PRIMARY_CARE: (
        TemplateItem(name="Chief complaint", terms=["brings you", "bothering", "complain", "problem"]),
        TemplateItem(name="Medication adherence", terms=["taking", "medication", "pills", "forget"]),
        TemplateItem(name="Vital signs", terms=["blood pressure", "pulse", "weight", "temperature"]),
        TemplateItem(
            name="Follow-up interval", terms=["follow up", "come back", "weeks", "months", "review"]
        ),
    ),
    Specialty.CARDIOLOGY: (
        TemplateItem(name="Cardiac symptoms", terms=["chest", "breath", "palpitation", "racing", "swollen"]),
        TemplateItem(name="Blood pressure and heart rate", terms=["blood pressure", "pulse", "heart rate"]),
        TemplateItem(name="Volume status", terms=["edema", "swelling", "swollen", "weigh", "ankles"]),
        TemplateItem(name="ECG or rhythm monitoring", terms=["ecg", "ekg", "monitor", "echo", "rhythm"]),
    ),
    Specialty.ORTHOPEDICS: (
        TemplateItem(name="Onset and duration", terms=["weeks", "days", "since", "months", "fell", "injur"]),
        TemplateItem(name="Examination", terms=["range of motion", "strength", "straight leg", "crepitus"]),
        TemplateItem(name="Red flags", terms=["numbness", "weakness", "bladder", "fever"]),
        TemplateItem(name="Imaging", terms=["x ray", "x-ray", "mri", "imaging", "scan"]),
    ),
    Specialty.EMERGENCY: (
        TemplateItem(name="Onset", terms=["since", "this morning", "hours", "started", "began"]),
        TemplateItem(name="Vital signs", terms=["oxygen", "pulse", "blood pressure", "temperature"]),
        TemplateItem(name="Work-up", terms=["ecg", "troponin", "x ray", "test", "blood work"]),
        TemplateItem(name="Disposition", terms=["admit", "discharge", "home", "monitor", "observation"]),
    ),
}

# Words Whisper should prefer for each specialty (beside the patient's own conditions and medicines).
TERMS: dict[Specialty, tuple[str, ...]] = {
    Specialty.PRIMARY_CARE: ("A1c", "statin", "metformin", "lipid panel", "hypertension"),
    Specialty.CARDIOLOGY: ("atrial fibrillation", "edema", "echocardiogram", "anticoagulation", "troponin"),
    Specialty.ORTHOPEDICS: ("crepitus", "straight leg raise", "osteoarthritis", "physical therapy"),
    Specialty.EMERGENCY: ("troponin", "ECG", "sinus rhythm", "ST changes", "saturation"),
}


def note_text(note: dict[str, Any], specialty: Specialty) -> str:
    """The SOAP note as the physician reads and signs it (citation tags dropped)."""
    strip = re.compile(r"\s*\[[^\]]*(?:transcript|Condition/|Observation/)[^\]]*\]")
    parts = [f"{specialty.value.replace('-', ' ').title()} note (AI draft, preliminary)"]
    for head in ("subjective", "objective", "assessment", "plan"):
        parts.append(f"{head.upper()}\n{strip.sub('', str(note.get(head, ''))).strip()}")
    return "\n\n".join(parts)


def document_reference(
    workflow_id: str, patient_id: str, encounter_id: str, physician_id: str, text: str, engine: str
) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "identifier": [{"system": STEP_SYSTEM, "value": step_key(workflow_id, "document")}],
        "extension": [
            {"url": f"{AI_EXTENSION}/ai-generated", "valueBoolean": True},
            {"url": f"{AI_EXTENSION}/model-version", "valueString": engine},
            {"url": f"{AI_EXTENSION}/encounter-id", "valueString": encounter_id},
        ],
        "status": "current",
        "docStatus": "preliminary",  # never final until the physician signs
        "type": {"coding": [{"system": c.LOINC, "code": "11506-3", "display": "Progress note"}]},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                        "code": "clinical-note",
                    }
                ]
            }
        ],
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": datetime.now(UTC).isoformat(),
        "author": [{"reference": f"Practitioner/{physician_id}"}],
        "content": [_attachment(text, "SOAP note (AI draft)")],
        "context": {"encounter": [{"reference": f"Encounter/{encounter_id}"}]},
    }


def _attachment(text: str, title: str) -> dict[str, Any]:
    data = base64.b64encode(text.encode()).decode()
    return {"attachment": {"contentType": "text/plain; charset=utf-8", "data": data, "title": title}}


def signed(doc: dict[str, Any], physician_id: str, text: str) -> dict[str, Any]:
    """The DocumentReference once its physician signed: final, their text, them as authenticator."""
    return {
        **doc,
        "docStatus": "final",
        "authenticator": {"reference": f"Practitioner/{physician_id}"},
        "content": [_attachment(text, "SOAP note (signed)")],
    }


def discarded(doc: dict[str, Any]) -> dict[str, Any]:
    """The physician writes their own note: the draft is withdrawn (never final)."""
    return {**doc, "status": "entered-in-error"}


def review_task(
    workflow_id: str, patient_id: str, encounter_id: str, physician_id: str, document_id: str
) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "identifier": [{"system": STEP_SYSTEM, "value": step_key(workflow_id, "review-task")}],
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"text": "Review and sign the AI-drafted encounter note"},
        "for": {"reference": f"Patient/{patient_id}"},
        "encounter": {"reference": f"Encounter/{encounter_id}"},
        "focus": {"reference": f"DocumentReference/{document_id}"},
        "owner": {"reference": f"Practitioner/{physician_id}"},
        "authoredOn": datetime.now(UTC).isoformat(),
    }


def text_of(doc: dict[str, Any]) -> str:
    data = doc["content"][0]["attachment"]["data"]
    return base64.b64decode(data).decode()


def final_codes(candidates: Sequence[CodeCandidate], remove: Sequence[str]) -> list[CodeCandidate]:
    gone = {x.strip().upper().replace(".", "") for x in remove}
    return [x for x in candidates if x.code.upper().replace(".", "") not in gone]


def edit_distance(draft: str, final: str) -> float:
    """Word-level Levenshtein distance from the draft to the signed text, over the draft's words (0: signed
    as drafted; 1: every word changed)."""
    a, b = draft.split(), final.split()
    if not a:
        return 0.0 if not b else 1.0
    prev = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, wb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wa != wb))
        prev = cur
    return min(1.0, prev[-1] / len(a))


def quality_alert(recent: Sequence[float]) -> bool:
    """The physician's last EDIT_WINDOW signed notes changed by more than EDIT_ALERT on average."""
    return len(recent) >= EDIT_WINDOW and sum(recent[:EDIT_WINDOW]) / EDIT_WINDOW > EDIT_ALERT

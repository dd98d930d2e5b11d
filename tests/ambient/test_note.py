"""The note side of ambient documentation without Temporal: the specialty templates and the offline
engine's gaps, the note text, the DocumentReference (preliminary, AI extensions) and its signed and
withdrawn forms, the edit distance and the per-physician alert, the transcript's two forms."""

from __future__ import annotations

import pytest

from careflow.ambient import note
from careflow.ambient.transcript import Line, Transcript
from careflow.llm.providers.offline import draft_soap_note
from careflow.llm.tasks import SoapNoteInput
from careflow.llm.types import Evidence
from careflow.models.ambient import CodeCandidate, Specialty

CARDIO_VISIT = """Doctor: What brings you in today?
Patient: My ankles are swollen and I get breathless lying flat.
Doctor: Your pulse is irregular at about one hundred and ten.
Doctor: My assessment: your atrial fibrillation is not rate controlled.
Doctor: Continue the blood thinner and we will arrange a heart monitor."""


def test_every_specialty_has_a_template_and_terms() -> None:
    assert set(note.TEMPLATES) == set(Specialty) == set(note.TERMS)
    assert all(len(items) >= 4 and all(i.terms for i in items) for items in note.TEMPLATES.values())


def test_the_offline_engine_reports_what_the_specialty_template_misses() -> None:
    evidence = [
        Evidence(id="transcript", kind="transcript", text=CARDIO_VISIT),
        Evidence(
            id="Condition/c1",
            kind="fhir",
            title="Unspecified atrial fibrillation",
            text="Unspecified atrial fibrillation (ICD-10-CM I48.91)",
        ),
    ]
    inp = SoapNoteInput(specialty="cardiology", template=list(note.TEMPLATES[Specialty.CARDIOLOGY]))
    drafted = draft_soap_note(inp, evidence)
    assert [s.code for s in drafted.icd10_suggestions] == ["I48.91"]
    gaps = [g for g in drafted.missing_information if g.startswith("Template:")]
    assert gaps == []  # symptoms, rate, volume status and a monitor: the cardiology template is covered
    ortho = draft_soap_note(SoapNoteInput(template=list(note.TEMPLATES[Specialty.ORTHOPEDICS])), evidence)
    assert "Template: Imaging: not documented" in ortho.missing_information
    assert "Template: Red flags: not documented" in ortho.missing_information


def test_note_text_drops_citation_tags_and_keeps_placeholders() -> None:
    drafted = {
        "subjective": "Swollen ankles [transcript].",
        "objective": "Irregular pulse [transcript, Condition/c1]",
        "assessment": "AF in [PATIENT].",
        "plan": "Monitor.",
    }
    text = note.note_text(drafted, Specialty.CARDIOLOGY)
    assert text.startswith("Cardiology note (AI draft, preliminary)")
    assert "[transcript" not in text and "Condition/c1" not in text and "AF in [PATIENT]." in text
    assert text.index("SUBJECTIVE") < text.index("OBJECTIVE") < text.index("ASSESSMENT") < text.index("PLAN")


def test_document_reference_is_preliminary_ai_generated_and_linked() -> None:
    doc = note.document_reference("ambient-note-e1", "pat-1", "e1", "dr-1", "the note", "offline/v3")
    assert doc["docStatus"] == "preliminary" and doc["status"] == "current"
    assert doc["context"]["encounter"] == [{"reference": "Encounter/e1"}]
    ext = {
        e["url"].rsplit("/", 1)[1]: next(v for k, v in e.items() if k.startswith("value"))
        for e in doc["extension"]
    }
    assert ext == {"ai-generated": True, "model-version": "offline/v3", "encounter-id": "e1"}
    assert doc["identifier"][0]["value"] == "ambient-note-e1/document" and note.text_of(doc) == "the note"
    final = note.signed(doc, "dr-1", "the signed note")
    assert final["docStatus"] == "final" and note.text_of(final) == "the signed note"
    assert final["authenticator"] == {"reference": "Practitioner/dr-1"}
    gone = note.discarded(doc)
    assert gone["status"] == "entered-in-error" and gone["docStatus"] == "preliminary"
    task = note.review_task("ambient-note-e1", "pat-1", "e1", "dr-1", "doc-9")
    assert task["focus"] == {"reference": "DocumentReference/doc-9"} and task["owner"] == {
        "reference": "Practitioner/dr-1"
    }


@pytest.mark.parametrize(
    ("draft", "final", "distance"),
    [
        ("a b c d", "a b c d", 0.0),
        ("a b c d", "a x c d", 0.25),
        ("a b c d", "a b c d e f", 0.5),
        ("a b c d", "", 1.0),
        ("a b", "x y z w v", 1.0),
        ("", "", 0.0),
    ],
)
def test_word_level_edit_distance(draft: str, final: str, distance: float) -> None:
    assert note.edit_distance(draft, final) == distance


def test_quality_alert_needs_ten_notes_over_thirty_percent() -> None:
    assert not note.quality_alert([0.9] * 9)  # too few to judge
    assert note.quality_alert([0.31] * 10) and not note.quality_alert([0.3] * 10)
    assert not note.quality_alert([0.0] * 10 + [1.0] * 5)  # only the last ten count (newest first)


def test_final_codes_remove_by_code_in_any_spelling() -> None:
    kept = note.final_codes(
        [CodeCandidate(code="I48.91", description=""), CodeCandidate(code="I10", description="")], ["i4891"]
    )
    assert [c.code for c in kept] == ["I10"]


def test_transcript_forms() -> None:
    supplied = Transcript.supplied("[doctor] How are you? [patient] Fine.\n[patient] Really.")
    assert supplied.labelled() == "Doctor: How are you?\nPatient: Fine. Really."
    assert supplied.words == 5 and supplied.engine == "supplied"
    with pytest.raises(ValueError, match="labels every turn"):
        Transcript.supplied("no tags here")
    timed = Transcript(
        "faster-whisper/base", [Line(0.0, 2.0, "Hello.", "doctor"), Line(2.5, 3.0, "Hi.")], 3.0
    )
    assert Transcript.from_json(timed.to_json()) == timed and timed.speech_seconds == 2.5
    assert timed.labelled() == "Doctor: Hello.\nSpeaker: Hi."


def test_the_encounter_context_from_the_ehrs_resources() -> None:
    from careflow.ambient.context import NoPhysician, encounter_context

    enc = {
        "id": "e1",
        "subject": {"reference": "Patient/p1"},
        "participant": [{"individual": {"reference": "Practitioner/dr-a"}}],
    }
    conditions = [
        {
            "id": "c1",
            "code": {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "38341003"},
                    {
                        "system": "http://hl7.org/fhir/sid/icd-10-cm",
                        "code": "I10",
                        "display": "Essential (primary) hypertension",
                    },
                ]
            },
        },
        {"id": "c2", "code": {"text": "uncoded"}},
    ]
    meds = [
        {"medicationCodeableConcept": {"coding": [{"display": "lisinopril"}]}},
        {"medicationCodeableConcept": {}},
    ]
    ctx = encounter_context(enc, conditions, meds, None)
    assert (ctx.patient_id, ctx.physician_id, ctx.medications) == ("p1", "dr-a", ["lisinopril"])
    assert [(x.id, x.code) for x in ctx.conditions] == [("Condition/c1", "I10")]
    assert ctx.vocabulary == ["Essential (primary) hypertension", "lisinopril"]
    assert encounter_context(enc, [], [], "dr-badge").physician_id == "dr-badge"  # the badge owner first
    with pytest.raises(NoPhysician, match="names no practitioner"):
        encounter_context({"id": "e2", "subject": {"reference": "Patient/p1"}}, [], [], None)

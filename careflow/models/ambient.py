"""Models of ambient clinical documentation (seed P4, P14): one `AmbientNoteWorkflow` per encounter
(`ambient-note-<encounter id>`), from badge audio (or a diarized transcript) to a signed SOAP note with
coded diagnoses.  Audio and transcripts stay in the PHI store; payloads carry their references."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from careflow.models.common import FhirId
from careflow.task_queues import STT

PIPELINE = "ambient"  # the CareflowPipeline search attribute's value, `careflow demo ambient`
WORKFLOW_ID_PREFIX = "ambient-note-"
SLA_MINUTES = 60  # the note is in the EHR within 60 minutes of the encounter's end (seed P4)
ICD10_SHAPE = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")


def workflow_id(encounter_id: str) -> str:
    """One workflow per encounter: a re-upload of the same encounter attaches to it."""
    return WORKFLOW_ID_PREFIX + encounter_id


class Specialty(StrEnum):
    PRIMARY_CARE = "primary-care"
    CARDIOLOGY = "cardiology"
    ORTHOPEDICS = "orthopedics"
    EMERGENCY = "emergency"


class NoteSource(StrEnum):
    AUDIO = "audio"  # badge audio: speech to text and diarization here
    TRANSCRIPT = "transcript"  # a diarized transcript (`[doctor] ... [patient] ...`) from elsewhere


class AmbientStage(StrEnum):
    RECEIVED = "received"
    AWAITING_CONSENT = "awaiting-consent"
    READING = "reading"  # the encounter and the patient's context from the EHR
    TRANSCRIBING = "transcribing"
    DIARIZING = "diarizing"
    DRAFTING = "drafting"  # de-identification, the SOAP note, ICD-10-CM candidates
    WRITING = "writing"  # DocumentReference (preliminary) and the physician's review Task
    AWAITING_SIGNATURE = "awaiting-signature"
    AWAITING_CODING = "awaiting-coding"  # signed; the codes wait for a coder
    COMPLETED = "completed"  # signed and coded
    # named outcomes: nothing half-written, each with its reason
    NO_CONSENT = "no-consent"
    UNKNOWN_ENCOUNTER = "unknown-encounter"
    UNREADABLE_AUDIO = "unreadable-audio"
    TOO_SHORT = "too-short"
    NO_SPEECH = "no-speech"
    DEID_REFUSED = "deid-refused"  # an identifier of the patient survived de-identification
    NO_DRAFT = "no-draft"  # the AI gateway could not draft within its budget: operations told
    DISCARDED = "discarded"  # the physician wrote their own note
    UNSIGNED = "unsigned"  # nobody signed within the review window: the draft stays preliminary

    @property
    def settled(self) -> bool:
        return self in _SETTLED


_SETTLED = {s for s in AmbientStage if s.value in (
    "completed", "no-consent", "unknown-encounter", "unreadable-audio", "too-short", "no-speech",
    "deid-refused", "no-draft", "discarded", "unsigned",
)}  # fmt: skip


class NoteInput(BaseModel):
    encounter_id: FhirId
    source: NoteSource
    ref: str  # the PHI store reference of the audio or the diarized transcript
    specialty: Specialty = Specialty.PRIMARY_CARE
    physician_id: str | None = None  # the badge owner (Practitioner id); None: the encounter's attender
    ended_at: datetime | None = None  # when the encounter ended (the SLA's start); None: when submitted
    tenant_id: str = "default"
    stt_queue: str = STT  # where speech to text and diarization run (careflow-stt, a GPU pool, ...)
    # False only on a server without careflow's search attributes (the time-skipping test server).
    search_attributes: bool = True


# -- updates ----------------------------------------------------------------------------------------
class Consent(BaseModel):
    """The patient's consent to ambient recording, recorded before anything is processed."""

    granted: bool
    recorded_by: str = Field(min_length=1, max_length=64)  # who asked (Practitioner id, staff user)
    method: Literal["verbal", "written"] = "verbal"


class SignRequest(BaseModel):
    practitioner_id: str = Field(min_length=1, max_length=64)
    text: str | None = Field(None, max_length=100_000)  # the physician's edited note; None: as drafted


class DiscardRequest(BaseModel):
    practitioner_id: str = Field(min_length=1, max_length=64)
    reason: str = Field("", max_length=500)


class CodesReview(BaseModel):
    """A coder's decision (P14): the candidates kept, those removed, codes added.  Only then final."""

    coder_id: str = Field(min_length=1, max_length=64)
    remove: list[str] = Field(default_factory=list, max_length=25)
    add: list[str] = Field(default_factory=list, max_length=25)

    @model_validator(mode="after")
    def _shapes(self) -> CodesReview:
        bad = [c for c in self.add if not ICD10_SHAPE.match(c.strip().upper())]
        if bad:
            raise ValueError(f"not ICD-10-CM codes: {', '.join(bad)}")
        return self


class ReviewOutcome(BaseModel):
    stage: AmbientStage
    detail: str = ""


# -- activities -------------------------------------------------------------------------------------
class ContextRequest(BaseModel):
    encounter_id: str
    physician_id: str | None = None
    received_at: datetime  # an encounter the EHR does not know yet is waited for a while


class CodedCondition(BaseModel):
    id: str  # Condition/<id>: the evidence a code suggestion cites
    code: str  # ICD-10-CM
    display: str


class EncounterContext(BaseModel):
    """What the note is written from beside the transcript (PHI: travels only encrypted)."""

    encounter_id: str
    patient_id: str
    physician_id: str  # who may sign
    conditions: list[CodedCondition] = Field(default_factory=list)
    medications: list[str] = Field(default_factory=list)
    vocabulary: list[str] = Field(
        default_factory=list
    )  # conditions, medications (the specialty's terms added)


class TranscribeRequest(BaseModel):
    audio_ref: str
    vocabulary: list[str] = Field(default_factory=list)  # words the decoder should prefer


class TranscriptRef(BaseModel):
    ref: str  # the transcript (segments with times and speakers) in the PHI store
    engine: str  # faster-whisper/<model> | supplied
    audio_seconds: float = 0.0
    speech_seconds: float = 0.0
    segments: int = 0
    words: int = 0
    processing_seconds: float = 0.0  # this attempt's decoding time (a resumed attempt: the rest only)
    resumed_from: float = 0.0  # seconds of audio a killed attempt had already transcribed


class DiarizeRequest(BaseModel):
    audio_ref: str
    transcript_ref: str
    physician_id: str


class Diarized(BaseModel):
    ref: str  # the transcript again, every segment labelled doctor or patient
    speakers: int
    method: str  # "voice-profile" (nearest to the enrolled voice) | "turn-taking" (no profile enrolled)
    physician_similarity: float | None = None


class PrepareRequest(BaseModel):
    transcript_ref: str
    patient_id: str


class Prepared(BaseModel):
    text: str  # the diarized transcript, de-identified: what the gateway sees
    replaced: dict[str, int] = Field(default_factory=dict)  # placeholders by kind (counts only)
    words: int = 0


class WriteNoteRequest(BaseModel):
    workflow_id: str
    context: EncounterContext
    specialty: Specialty
    note: dict[str, Any]  # the gateway's SoapNote
    engine: str  # provider/model that drafted it


class CodeCandidate(BaseModel):
    code: str
    description: str


class WrittenNote(BaseModel):
    document_id: str
    task_id: str
    text: str  # the draft as written (name and birth date back in): PHI, encrypted in payloads
    codes: list[CodeCandidate] = Field(default_factory=list)
    dropped_codes: list[str] = Field(default_factory=list)  # "X99.9: not a code" ...
    gaps: list[str] = Field(default_factory=list)


class CloseRequest(BaseModel):
    """Sign or discard: the DocumentReference final (or entered-in-error), the review Task closed."""

    workflow_id: str
    document_id: str
    task_id: str
    encounter_id: str
    signed: bool
    practitioner_id: str
    text: str = ""  # the signed text (signing only)


class CodesRequest(BaseModel):
    workflow_id: str
    document_id: str
    candidates: list[str]
    review: CodesReview


class FinalCodes(BaseModel):
    codes: list[CodeCandidate]
    refused: list[str] = Field(default_factory=list)  # added codes that do not exist or do not bill


class QualityRecord(BaseModel):
    workflow_id: str
    encounter_id: str
    physician_id: str
    specialty: Specialty
    outcome: Literal["signed", "discarded"]
    edit_distance: float | None = None  # word-level, draft vs signed (None: discarded)
    signing_minutes: float
    note_ready_minutes: float | None = None


class QualityVerdict(BaseModel):
    physician_notes: int  # of the physician's last 10 signed notes
    mean_edit_distance: float | None
    alert: bool  # above 30 % over the last 10


class NoticeRequest(BaseModel):
    workflow_id: str
    kind: str  # review-reminder | review-escalation | sla-escalation | coding-reminder | quality-alert
    step: str  # the idempotency key's step
    recipient_id: str  # a Practitioner id, or "operations"
    detail: str = ""  # no PHI: ids, minutes


class AmbientStatus(BaseModel):
    stage: AmbientStage = AmbientStage.RECEIVED
    reason: str = ""
    source: NoteSource | None = None
    specialty: Specialty | None = None
    consent: Consent | None = None
    physician_id: str = ""
    transcript: TranscriptRef | None = None
    diarization: str = ""
    replaced: dict[str, int] = Field(default_factory=dict)
    engine: str = ""
    document_id: str = ""
    task_id: str = ""
    note: str = ""  # the draft (PHI: the status query's payload is encrypted)
    gaps: list[str] = Field(default_factory=list)
    codes: list[CodeCandidate] = Field(default_factory=list)  # candidates until a coder decides
    dropped_codes: list[str] = Field(default_factory=list)
    codes_final: bool = False
    note_ready_at: datetime | None = None
    note_ready_minutes: float | None = None  # from the encounter's end: the 60-minute SLA
    sla_escalated: bool = False
    reminders: int = 0
    escalated: bool = False
    signed_by: str = ""
    edit_distance: float | None = None
    quality_alert: bool = False

"""AmbientNoteWorkflow on the time-skipping server, its activities standing in for the EHR, the PHI
store, speech to text and the gateway so the workflow's own logic is tested alone (the real activities
run in test_ambient_e2e.py).

Consent first (none within the hour, or declined: no-consent, the recording deleted); the named outcomes
of bad audio, an unknown encounter and a de-identification leak; sign (only the encounter's physician,
with edits: edit distance) then the coder's codes; discard; reminders, the escalation and unsigned after
the review window; the 45-minute SLA timer; the quality alert."""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.audit import RecordAuditInput, RecordAuditOutput
from activities.llm import DraftInput, DraftOutput
from careflow.llm.tasks import SoapNoteInput
from careflow.llm.types import Tier
from careflow.models.ambient import (
    AmbientStage,
    AmbientStatus,
    CloseRequest,
    CodeCandidate,
    CodedCondition,
    CodesRequest,
    CodesReview,
    Consent,
    ContextRequest,
    Diarized,
    DiarizeRequest,
    DiscardRequest,
    EncounterContext,
    FinalCodes,
    NoteInput,
    NoteSource,
    NoticeRequest,
    Prepared,
    PrepareRequest,
    QualityRecord,
    QualityVerdict,
    SignRequest,
    Specialty,
    TranscribeRequest,
    TranscriptRef,
    WriteNoteRequest,
    WrittenNote,
    workflow_id,
)
from starters.clients.history import export_history
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.ambient import AmbientNoteWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
RECORD = os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1"
DRAFT = (
    "Subjective: knee pain for three weeks. Objective: crepitus. Assessment: osteoarthritis. Plan: therapy."
)

# What the stand-ins saw, by workflow id.
seen: dict[str, list[str]] = defaultdict(list)
notices: dict[str, list[NoticeRequest]] = defaultdict(list)
closes: dict[str, CloseRequest] = {}
reviews: dict[str, QualityRecord] = {}
audits: dict[str, list[str]] = defaultdict(list)
drafts: dict[str, SoapNoteInput] = {}


def _wid() -> str:
    return activity.info().workflow_id or ""


@activity.defn(name="ambient.context")
async def context(req: ContextRequest) -> EncounterContext:
    seen[_wid()].append("context")
    if req.encounter_id.startswith("unknown-"):
        raise ApplicationError(
            f"the EHR has no Encounter {req.encounter_id}", type="EncounterNotFound", non_retryable=True
        )
    return EncounterContext(
        encounter_id=req.encounter_id,
        patient_id="pat-1",
        physician_id=req.physician_id or "dr-lee",
        conditions=[
            CodedCondition(id="Condition/c1", code="M17.11", display="Primary osteoarthritis, right knee")
        ],
        vocabulary=["osteoarthritis"],
    )


@activity.defn(name="ambient.transcribe")
async def transcribe(req: TranscribeRequest) -> TranscriptRef:
    seen[_wid()].append(f"transcribe@{activity.info().task_queue}")
    e = _wid().removeprefix("ambient-note-")
    info = activity.info()
    if e.startswith("slow-") and info.current_attempt_scheduled_time - info.scheduled_time < timedelta(
        minutes=50
    ):
        raise ApplicationError("the STT pool is saturated", type="SttBusy")  # retried, with backoff
    for kind, message in (("short", "AudioTooShort"), ("silent", "NoSpeech"), ("garbled", "UnreadableAudio")):
        if e.startswith(kind):
            raise ApplicationError(f"{kind} audio", type=message, non_retryable=True)
    return TranscriptRef(
        ref="transcript/" + "a" * 64,
        engine="faster-whisper/test",
        audio_seconds=600,
        speech_seconds=540,
        segments=90,
        words=1400,
        processing_seconds=90,
    )


@activity.defn(name="ambient.diarize")
async def diarize(req: DiarizeRequest) -> Diarized:
    seen[_wid()].append(f"diarize@{activity.info().task_queue}")
    return Diarized(
        ref="transcript/" + "b" * 64, speakers=2, method="voice-profile", physician_similarity=0.83
    )


@activity.defn(name="ambient.prepare")
async def prepare(req: PrepareRequest) -> Prepared:
    seen[_wid()].append(f"prepare:{req.transcript_ref[:12]}")
    if "leaky" in _wid():
        raise ApplicationError(
            "identifiers of the patient survived de-identification: PATIENT",
            type="PhiLeak",
            non_retryable=True,
        )
    return Prepared(
        text="Doctor: How is the knee, [PATIENT]?\nPatient: It hurts.", replaced={"PATIENT": 2}, words=9
    )


@activity.defn(name="llm.draft")
async def draft(inp: DraftInput) -> DraftOutput:
    typed = inp.typed_input()
    assert isinstance(typed, SoapNoteInput)
    drafts[_wid()] = typed
    note = {
        "subjective": "Knee pain.",
        "objective": "Crepitus.",
        "assessment": "Osteoarthritis.",
        "plan": "Therapy.",
        "icd10_suggestions": [],
        "citations": ["transcript"],
        "missing_information": [],
    }
    return DraftOutput(
        task=inp.task,
        output=note,
        request_id=inp.request_id,
        provider="offline",
        model="test",
        requested_tier=inp.tier,
        tier=Tier.FRONTIER,
    )


@activity.defn(name="ambient.write_note")
async def write_note(req: WriteNoteRequest) -> WrittenNote:
    seen[req.workflow_id].append("write")
    return WrittenNote(
        document_id="doc-1",
        task_id="task-1",
        text=DRAFT,
        gaps=["Template: Imaging: not documented"],
        codes=[
            CodeCandidate(code="M17.11", description="Unilateral primary osteoarthritis, right knee"),
            CodeCandidate(code="M25.561", description="Pain in right knee"),
        ],
        dropped_codes=["M17: not billable"],
    )


@activity.defn(name="ambient.close")
async def close(req: CloseRequest) -> None:
    closes[req.workflow_id] = req


@activity.defn(name="ambient.final_codes")
async def final_codes(req: CodesRequest) -> FinalCodes:
    kept = [c for c in req.candidates if c not in req.review.remove]
    added = [c for c in req.review.add if c != "Z99.999"]
    refused = ["Z99.999: not an ICD-10-CM code"] if "Z99.999" in req.review.add else []
    return FinalCodes(codes=[CodeCandidate(code=c, description="") for c in kept + added], refused=refused)


@activity.defn(name="ambient.record_review")
async def record_review(q: QualityRecord) -> QualityVerdict:
    reviews[q.workflow_id] = q
    alert = "heavy" in q.workflow_id
    return QualityVerdict(physician_notes=10, mean_edit_distance=0.41 if alert else 0.05, alert=alert)


@activity.defn(name="ambient.record_codes")
async def record_codes(req: CodesRequest) -> None:
    seen[req.workflow_id].append(f"codes:{','.join(req.candidates)}:{req.review.coder_id}")


@activity.defn(name="ambient.notice")
async def notice(req: NoticeRequest) -> None:
    notices[req.workflow_id].append(req)


@activity.defn(name="ambient.forget")
async def forget(ref: str) -> bool:
    seen[_wid()].append(f"forget:{ref}")
    return True


@activity.defn(name="audit.record")
async def audit(inp: RecordAuditInput) -> RecordAuditOutput:
    audits[inp.event.workflow_id or ""].append(f"{inp.step}:{inp.event.actor}")
    return RecordAuditOutput(event_id=1, inserted=True)


MAIN = [
    context,
    prepare,
    draft,
    write_note,
    close,
    final_codes,
    record_review,
    record_codes,
    notice,
    forget,
    audit,
]


@pytest.fixture
async def env(time_skipping: WorkflowEnvironment, task_queue: str) -> AsyncIterator[WorkflowEnvironment]:
    c = time_skipping.client
    async with (
        Worker(
            c,
            task_queue=task_queue,
            workflows=[AmbientNoteWorkflow],
            activities=MAIN,
            workflow_runner=sandbox_runner(),
        ),
        Worker(c, task_queue=f"{task_queue}-stt", activities=[transcribe, diarize]),
    ):
        yield time_skipping


async def start(
    env: WorkflowEnvironment,
    task_queue: str,
    kind: str,
    *,
    source: NoteSource = NoteSource.AUDIO,
    consent: bool | None = True,
) -> WorkflowHandle:
    encounter = f"{kind}-{uuid.uuid4().hex[:10]}"
    ref = ("audio/" if source is NoteSource.AUDIO else "transcript/") + "c" * 64
    handle = await env.client.start_workflow(
        AmbientNoteWorkflow.run,
        NoteInput(
            encounter_id=encounter,
            source=source,
            ref=ref,
            specialty=Specialty.ORTHOPEDICS,
            stt_queue=f"{task_queue}-stt",
            search_attributes=False,
        ),
        id=workflow_id(encounter),
        task_queue=task_queue,
    )
    if consent is not None:
        await handle.execute_update(
            AmbientNoteWorkflow.consent, Consent(granted=consent, recorded_by="dr-lee")
        )
    return handle


async def status(handle: WorkflowHandle) -> AmbientStatus:
    return await handle.query(AmbientNoteWorkflow.status)


async def at(handle: WorkflowHandle, stage: AmbientStage) -> AmbientStatus:
    async def there() -> bool:
        return (await status(handle)).stage is stage

    await wait_until(there, what=str(stage))
    return await status(handle)


async def record(env: WorkflowEnvironment, handle: WorkflowHandle, name: str) -> None:
    if RECORD:
        written = await export_history(env.client, handle.id, HISTORIES)
        written.replace(HISTORIES / f"{name}.json")


async def test_audio_to_a_signed_and_coded_note(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue, "visit")
    st = await at(handle, AmbientStage.AWAITING_SIGNATURE)
    # speech on careflow-stt, then the diarized transcript is what gets de-identified
    stt = f"{task_queue}-stt"  # speech runs on its own queue
    assert seen[handle.id][:4] == ["context", f"transcribe@{stt}", f"diarize@{stt}", "prepare:transcript/b"]
    assert (
        drafts[handle.id].specialty == "orthopedics"
        and drafts[handle.id].template[0].name == "Onset and duration"
    )
    assert (st.document_id, st.task_id, st.physician_id) == ("doc-1", "task-1", "dr-lee")
    assert st.replaced == {"PATIENT": 2} and st.diarization == "voice-profile" and st.engine == "offline/test"
    assert [c.code for c in st.codes] == ["M17.11", "M25.561"] and not st.codes_final
    assert st.note_ready_minutes is not None and st.note_ready_minutes < 60
    assert st.consent == Consent(granted=True, recorded_by="dr-lee")

    # only the encounter's physician may sign
    with pytest.raises(WorkflowUpdateFailedError) as wrong:
        await handle.execute_update(AmbientNoteWorkflow.sign, SignRequest(practitioner_id="dr-other"))
    assert "only the encounter's physician (Practitioner/dr-lee) may sign" in str(wrong.value.cause)
    edited = DRAFT.replace("therapy.", "physical therapy twice a week.")
    await handle.execute_update(AmbientNoteWorkflow.sign, SignRequest(practitioner_id="dr-lee", text=edited))
    st = await at(handle, AmbientStage.AWAITING_CODING)
    assert closes[handle.id].signed and closes[handle.id].text == edited
    assert st.edit_distance == pytest.approx(5 / 12, abs=1e-3)  # "therapy." changed, 4 words added, of 12
    assert reviews[handle.id].outcome == "signed" and reviews[handle.id].edit_distance == st.edit_distance

    # a coder's decision makes the codes final; removing a code that is not a candidate is refused
    with pytest.raises(WorkflowUpdateFailedError) as stray:
        await handle.execute_update(
            AmbientNoteWorkflow.codes, CodesReview(coder_id="coder-1", remove=["I10"])
        )
    assert "not among the candidates: I10" in str(stray.value.cause)
    final = await handle.execute_update(
        AmbientNoteWorkflow.codes,
        CodesReview(coder_id="coder-1", remove=["M25.561"], add=["Z99.999", "M79.604"]),
    )
    assert [c.code for c in final.codes] == ["M17.11", "M79.604"] and final.refused == [
        "Z99.999: not an ICD-10-CM code"
    ]
    done = await handle.result()
    assert done.stage is AmbientStage.COMPLETED and done.codes_final and done.signed_by == "dr-lee"
    assert seen[handle.id][-1] == "codes:M17.11,M79.604:coder-1"
    assert audits[handle.id] == ["consent-granted:dr-lee", "sign:dr-lee", "codes:coder-1"]
    assert notices[handle.id] == []  # signed promptly: no reminder, no escalation
    await record(env, handle, "AmbientNoteWorkflow-signed-coded")


async def test_a_supplied_transcript_skips_speech_and_can_be_discarded(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "typed", source=NoteSource.TRANSCRIPT)
    await at(handle, AmbientStage.AWAITING_SIGNATURE)
    assert not any(s.startswith(("transcribe", "diarize")) for s in seen[handle.id])
    assert seen[handle.id][1] == "prepare:transcript/c"
    await handle.execute_update(
        AmbientNoteWorkflow.discard, DiscardRequest(practitioner_id="dr-lee", reason="wrong patient context")
    )
    done = await handle.result()
    assert done.stage is AmbientStage.DISCARDED and "counted as a rejection" in done.reason
    assert not closes[handle.id].signed and reviews[handle.id].outcome == "discarded"
    assert reviews[handle.id].edit_distance is None
    with pytest.raises(RPCError):  # the workflow has ended: nothing awaits a signature any more
        await handle.execute_update(AmbientNoteWorkflow.sign, SignRequest(practitioner_id="dr-lee"))
    await record(env, handle, "AmbientNoteWorkflow-discarded")


@pytest.mark.parametrize("declined", [False, True])
async def test_no_consent_no_transcript_and_the_recording_deleted(
    env: WorkflowEnvironment, task_queue: str, declined: bool
) -> None:
    t0 = await env.get_current_time()
    handle = await start(env, task_queue, "quiet", consent=False if declined else None)
    done = await handle.result()
    assert done.stage is AmbientStage.NO_CONSENT
    assert seen[handle.id] == ["forget:audio/" + "c" * 64]  # nothing read, nothing transcribed
    if declined:
        assert done.reason.startswith("the patient declined") and audits[handle.id] == [
            "consent-declined:dr-lee"
        ]
    else:
        assert done.reason.startswith("no consent recorded within 1:00:00")
        assert await env.get_current_time() - t0 >= timedelta(hours=1)
        await record(env, handle, "AmbientNoteWorkflow-no-consent")


@pytest.mark.parametrize(
    ("kind", "stage"),
    [
        ("short", AmbientStage.TOO_SHORT),
        ("silent", AmbientStage.NO_SPEECH),
        ("garbled", AmbientStage.UNREADABLE_AUDIO),
        ("unknown", AmbientStage.UNKNOWN_ENCOUNTER),
        ("leaky", AmbientStage.DEID_REFUSED),
    ],
)
async def test_bad_input_ends_as_a_named_outcome_with_nothing_written(
    env: WorkflowEnvironment, task_queue: str, kind: str, stage: AmbientStage
) -> None:
    handle = await start(env, task_queue, kind)
    done = await handle.result()
    assert done.stage is stage and done.reason and not done.document_id
    assert "write" not in seen[handle.id] and handle.id not in drafts  # the gateway was never called
    if kind == "leaky":
        assert done.reason.endswith("the gateway was not called")
        await record(env, handle, "AmbientNoteWorkflow-deid-refused")


async def test_unsigned_note_reminds_escalates_then_ends_unsigned(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "busy")
    done = await handle.result()  # time skips: nobody signs
    assert done.stage is AmbientStage.UNSIGNED and "stays preliminary" in done.reason
    sent = [(n.kind, n.recipient_id) for n in notices[handle.id]]
    assert sent == [
        ("review-reminder", "dr-lee"),
        ("review-reminder", "dr-lee"),
        ("review-escalation", "operations"),
    ]
    assert done.reminders == 2 and done.escalated and handle.id not in closes
    await record(env, handle, "AmbientNoteWorkflow-unsigned")


async def test_the_sla_timer_escalates_a_note_not_in_the_ehr_at_45_minutes(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "slow")  # speech to text fails over for 50 minutes
    done = await handle.result()  # time skips: then nobody signs
    sent = [(n.kind, n.recipient_id) for n in notices[handle.id]]
    assert sent[0] == ("sla-escalation", "operations") and done.sla_escalated
    assert "45 minutes after the encounter ended (stage transcribing)" in notices[handle.id][
        0
    ].detail.replace("0:45:00", "45 minutes")
    assert done.note_ready_minutes is not None and done.note_ready_minutes >= 50
    assert sent.count(("sla-escalation", "operations")) == 1  # once, not per reminder
    await record(env, handle, "AmbientNoteWorkflow-sla-escalated")


async def test_heavily_edited_notes_raise_the_physicians_quality_alert(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "heavy")
    await at(handle, AmbientStage.AWAITING_SIGNATURE)
    with pytest.raises(WorkflowUpdateFailedError) as again:
        await handle.execute_update(AmbientNoteWorkflow.consent, Consent(granted=True, recorded_by="dr-lee"))
    assert "consent was already recorded" in str(again.value.cause)
    await handle.execute_update(
        AmbientNoteWorkflow.sign, SignRequest(practitioner_id="dr-lee", text="Rewritten entirely.")
    )
    await at(handle, AmbientStage.AWAITING_CODING)
    st = await status(handle)
    assert st.quality_alert and st.edit_distance == 1.0
    alert = notices[handle.id][0]
    assert (alert.kind, alert.recipient_id) == (
        "quality-alert",
        "operations",
    ) and "edited 41%" in alert.detail
    await handle.terminate("test over")

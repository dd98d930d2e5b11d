"""Activities of ambient notes.  `AmbientActivities` run on careflow-main (EHR, PHI store, database);
`SpeechActivities` on careflow-stt, which scales apart (speech to text and diarization are the heavy
part; GPU workers in production).

Thin: the logic is in careflow/ambient/ and careflow/deid.py.  Idempotent: FHIR writes are conditional
creates keyed by `step_key(workflow id, step)` or full updates of the same content, PHI store objects
are content-addressed, rows upsert.  Audio and transcripts move by reference; only the de-identified
transcript and the note travel in (encrypted) payloads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fhir import application_error
from careflow import deid
from careflow.ambient import icd10, note, store
from careflow.ambient.context import NoPhysician, encounter_context, patient_of
from careflow.ambient.transcript import Line, Transcript
from careflow.config import Settings
from careflow.fhir.client import FhirClient
from careflow.fhir.errors import FhirError, FhirNotFound
from careflow.idempotency import step_identifier, step_key
from careflow.models.ambient import (
    CloseRequest,
    CodeCandidate,
    CodesRequest,
    ContextRequest,
    Diarized,
    DiarizeRequest,
    EncounterContext,
    FinalCodes,
    NoticeRequest,
    Prepared,
    PrepareRequest,
    QualityRecord,
    QualityVerdict,
    TranscribeRequest,
    TranscriptRef,
    WriteNoteRequest,
    WrittenNote,
)
from careflow.notify.notifier import Notifier
from careflow.phi_store import PhiStore, PhiStoreError
from careflow.security.logging import get_logger

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = get_logger("careflow.ambient")

ENCOUNTER_GRACE = timedelta(hours=1)  # the EHR may learn of an encounter after its audio arrives
MIN_AUDIO_SECONDS = 10.0
HEARTBEAT_EVERY = 5.0  # seconds between progress reports while decoding


def _fail(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


class AmbientActivities:
    def __init__(self, fhir: FhirClient, pool: asyncpg.Pool, phi: PhiStore, notifier: Notifier) -> None:
        self._fhir = fhir
        self._pool = pool
        self._phi = phi
        self._notifier = notifier

    def all(self) -> list[Callable[..., Any]]:
        return [self.context, self.prepare, self.write_note, self.close, self.final_codes, self.record_review,
                self.record_codes, self.notice, self.forget]  # fmt: skip

    @activity.defn(name="ambient.context")
    async def context(self, req: ContextRequest) -> EncounterContext:
        wid = activity.info().workflow_id or ""
        try:
            try:
                enc = await self._fhir.read("Encounter", req.encounter_id, workflow_id=wid)
            except FhirNotFound:
                late = datetime.now(UTC) - req.received_at > ENCOUNTER_GRACE
                raise ApplicationError(
                    f"the EHR has no Encounter {req.encounter_id}",
                    type="EncounterNotFound",
                    non_retryable=late,
                ) from None
            patient_id = patient_of(enc)
            conditions = await self._fhir.search("Condition", {"patient": patient_id}, workflow_id=wid)
            meds = await self._fhir.search("MedicationRequest", {"patient": patient_id}, workflow_id=wid)
        except FhirError as exc:
            raise application_error(exc) from None
        try:
            return encounter_context(enc, conditions, meds, req.physician_id)
        except NoPhysician as exc:
            raise _fail(str(exc), "NoPhysician") from None

    async def _identifiers(self, patient_id: str, wid: str) -> tuple[deid.Identifiers, dict[str, Any]]:
        try:
            patient = await self._fhir.read("Patient", patient_id, workflow_id=wid)
        except FhirError as exc:
            raise application_error(exc) from None
        return deid.Identifiers.of_patient(patient), patient

    @activity.defn(name="ambient.prepare")
    async def prepare(self, req: PrepareRequest) -> Prepared:
        """The transcript, de-identified; refused (PhiLeak) if an identifier of the patient survives."""
        wid = activity.info().workflow_id or ""
        transcript = Transcript.from_json(await asyncio.to_thread(self._phi.read, req.transcript_ref))
        known, _ = await self._identifiers(req.patient_id, wid)
        clean = deid.deidentify(transcript.labelled(), known)
        leaked = deid.leaks(clean.text, known)
        if leaked:
            raise _fail("identifiers of the patient survived de-identification: "
                        + ", ".join(k.value for k in leaked), "PhiLeak")  # fmt: skip
        return Prepared(text=clean.text, replaced=clean.counts(), words=len(clean.text.split()))

    @activity.defn(name="ambient.write_note")
    async def write_note(self, req: WriteNoteRequest) -> WrittenNote:
        """Name and birth date back in, real billable codes only, the DocumentReference and review Task."""
        wid, ctx = req.workflow_id, req.context
        _, patient = await self._identifiers(ctx.patient_id, wid)
        text = deid.reidentify(note.note_text(req.note, req.specialty), deid.note_values(patient))
        suggested = [str(s.get("code", "")) for s in req.note.get("icd10_suggestions") or []]
        kept, dropped = await asyncio.to_thread(icd10.validate, suggested)
        try:
            doc, _ = await self._fhir.conditional_create(
                note.document_reference(
                    wid, ctx.patient_id, ctx.encounter_id, ctx.physician_id, text, req.engine
                ),
                step_identifier(wid, "document"),
                workflow_id=wid,
            )
            task, _ = await self._fhir.conditional_create(
                note.review_task(wid, ctx.patient_id, ctx.encounter_id, ctx.physician_id, str(doc["id"])),
                step_identifier(wid, "review-task"),
                workflow_id=wid,
            )
        except FhirError as exc:
            raise application_error(exc) from None
        log.info("ambient note written", workflow_id=wid, codes=len(kept), dropped=len(dropped))
        return WrittenNote(
            document_id=str(doc["id"]),
            task_id=str(task["id"]),
            text=text,
            codes=[CodeCandidate(code=k.code, description=k.description) for k in kept],
            dropped_codes=[f"{d.code}: {d.reason}" for d in dropped],
            gaps=[str(g) for g in req.note.get("missing_information") or []],
        )

    @activity.defn(name="ambient.close")
    async def close(self, req: CloseRequest) -> None:
        """Signed: the document final with the physician's text; discarded: withdrawn.  The Task closes."""
        wid = req.workflow_id
        try:
            doc = await self._fhir.read("DocumentReference", req.document_id, workflow_id=wid)
            doc = note.signed(doc, req.practitioner_id, req.text) if req.signed else note.discarded(doc)
            await self._fhir.update(doc, workflow_id=wid)
            task = await self._fhir.read("Task", req.task_id, workflow_id=wid)
            task["status"] = "completed" if req.signed else "cancelled"
            await self._fhir.update(task, workflow_id=wid)
        except FhirError as exc:
            raise application_error(exc) from None

    @activity.defn(name="ambient.final_codes")
    async def final_codes(self, req: CodesRequest) -> FinalCodes:
        """The coder's decision against the real code set: added codes must exist and bill."""
        kept = note.final_codes(
            [CodeCandidate(code=x, description="") for x in req.candidates], req.review.remove
        )
        added, refused = await asyncio.to_thread(icd10.validate, req.review.add)
        described, _ = await asyncio.to_thread(icd10.validate, [x.code for x in kept])
        codes = [CodeCandidate(code=k.code, description=k.description) for k in [*described, *added]]
        codes = list({x.code: x for x in codes}.values())
        return FinalCodes(codes=codes, refused=[f"{d.code}: {d.reason}" for d in refused])

    @activity.defn(name="ambient.record_review")
    async def record_review(self, q: QualityRecord) -> QualityVerdict:
        recent = await store.record_review(self._pool, q)
        alert = note.quality_alert(recent)
        mean = sum(recent) / len(recent) if recent else None
        return QualityVerdict(physician_notes=len(recent), mean_edit_distance=mean, alert=alert)

    @activity.defn(name="ambient.record_codes")
    async def record_codes(self, req: CodesRequest) -> None:
        await store.record_codes(
            self._pool, req.workflow_id, [CodeCandidate(code=x, description="") for x in req.candidates],
            req.review.coder_id,
        )  # fmt: skip

    @activity.defn(name="ambient.notice")
    async def notice(self, req: NoticeRequest) -> None:
        await self._notifier.send(
            dedup_key=step_key(req.workflow_id, req.step),
            kind=f"ambient-{req.kind}",
            recipient_id=req.recipient_id,
            workflow_id=req.workflow_id,
            body={"kind": req.kind, "workflow_id": req.workflow_id, "detail": req.detail},
        )

    @activity.defn(name="ambient.forget")
    async def forget(self, ref: str) -> bool:
        """No consent: the recording is deleted, not kept."""
        return await asyncio.to_thread(self._phi.delete, ref)


class SpeechActivities:
    """careflow-stt: the Whisper model and the voice encoder load once per worker process."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, phi: PhiStore) -> None:
        self._settings = settings
        self._pool = pool
        self._phi = phi

    def all(self) -> list[Callable[..., Any]]:
        return [self.transcribe, self.diarize]

    @cached_property
    def _model(self) -> tuple[WhisperModel, str]:
        from careflow.ambient import stt

        path = stt.model_path(self._settings.stt_model, self._settings.state_dir / "models")
        return stt.load_model(path), path.name

    @cached_property
    def _encoder(self) -> Any:
        from careflow.ambient import diarize

        return diarize.encoder()

    def _audio(self, ref: str) -> Any:
        import io

        from faster_whisper import decode_audio

        from careflow.ambient.stt import SAMPLE_RATE

        try:
            return decode_audio(io.BytesIO(self._phi.read(ref)), sampling_rate=SAMPLE_RATE)
        except PhiStoreError:
            raise
        except Exception as exc:  # PyAV's errors: not audio, truncated, unknown codec
            raise _fail(f"the audio cannot be decoded ({type(exc).__name__})", "UnreadableAudio") from None

    @activity.defn(name="ambient.transcribe")
    async def transcribe(self, req: TranscribeRequest) -> TranscriptRef:
        """Speech to text.  The finished segments go to the PHI store as they come (every few seconds) and
        the heartbeat carries that partial transcript's reference; a retry resumes after its last segment."""
        from careflow.ambient import stt
        from careflow.ambient.stt import SAMPLE_RATE

        details = activity.info().heartbeat_details  # a killed attempt's partial transcript
        partial: str | None = details[0]["partial"] if details else None
        done = Transcript.from_json(await asyncio.to_thread(self._phi.read, partial)).lines if partial else []
        audio = await asyncio.to_thread(self._audio, req.audio_ref)
        seconds = len(audio) / SAMPLE_RATE
        if seconds < MIN_AUDIO_SECONDS:
            raise _fail(
                f"{seconds:.1f} s of audio: an encounter needs at least {MIN_AUDIO_SECONDS:.0f} s",
                "AudioTooShort",
            )
        model, name = await asyncio.to_thread(lambda: self._model)
        resumed = done[-1].end if done else 0.0
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        found: asyncio.Queue[stt.Segment | None] = asyncio.Queue()

        def decode() -> None:
            try:
                for seg in stt.transcribe(
                    model,
                    audio,
                    offset=resumed or 0.0,
                    vocabulary=req.vocabulary,
                    vocabulary_mode=self._settings.stt_vocabulary,
                ):
                    loop.call_soon_threadsafe(found.put_nowait, seg)
            finally:
                loop.call_soon_threadsafe(found.put_nowait, None)

        worker = asyncio.create_task(asyncio.to_thread(decode))
        saved, last_beat = len(done), time.monotonic()
        while True:
            # A timer, not the segments, paces the heartbeat: one segment can take longer than the
            # heartbeat timeout on a busy machine, and a live decoding must not look like a dead worker.
            if time.monotonic() - last_beat >= HEARTBEAT_EVERY:
                if len(done) > saved:
                    partial, saved = await self._checkpoint(done, partial), len(done)
                reached = done[-1].end if done else resumed
                activity.heartbeat({"partial": partial, "seconds": reached, "segments": len(done)})
                last_beat = time.monotonic()
            try:
                due = last_beat + HEARTBEAT_EVERY - time.monotonic()
                seg = await asyncio.wait_for(found.get(), timeout=max(due, 0.1))
            except TimeoutError:
                continue
            if seg is None:
                break
            done.append(Line(seg.start, seg.end, seg.text, words=list(seg.words)))
        await worker
        if not done:
            raise _fail(f"no speech in {seconds:.0f} s of audio", "NoSpeech")
        transcript = Transcript(f"faster-whisper/{name}", done, seconds)
        stored = await asyncio.to_thread(self._phi.put, "transcript", transcript.to_json())
        if partial:
            await asyncio.to_thread(self._phi.delete, partial)
        return TranscriptRef(
            ref=stored.ref, engine=transcript.engine, audio_seconds=round(seconds, 2),
            speech_seconds=round(transcript.speech_seconds, 2), segments=len(done), words=transcript.words,
            processing_seconds=round(time.monotonic() - started, 2), resumed_from=resumed or 0.0,
        )  # fmt: skip

    async def _checkpoint(self, done: list[Line], previous: str | None) -> str:
        """The segments so far as a partial transcript in the PHI store (the one before it deleted)."""
        ref = (
            await asyncio.to_thread(self._phi.put, "transcript", Transcript("partial", done).to_json())
        ).ref
        if previous and previous != ref:
            await asyncio.to_thread(self._phi.delete, previous)
        return ref

    @activity.defn(name="ambient.diarize")
    async def diarize(self, req: DiarizeRequest) -> Diarized:
        from careflow.ambient import diarize

        transcript = Transcript.from_json(await asyncio.to_thread(self._phi.read, req.transcript_ref))
        audio = await asyncio.to_thread(self._audio, req.audio_ref)
        profile = await store.profile(self._pool, req.physician_id)
        speakers = await asyncio.to_thread(diarize.label, self._encoder, audio, transcript.lines, profile)
        transcript.lines = speakers.lines
        stored = await asyncio.to_thread(self._phi.put, "transcript", transcript.to_json())
        return Diarized(
            ref=stored.ref,
            speakers=len({x.speaker for x in speakers.lines}),
            method=speakers.method,
            physician_similarity=speakers.physician_similarity,
        )

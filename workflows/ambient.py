"""Ambient clinical documentation (seed P4, P14): `AmbientNoteWorkflow`, id `ambient-note-<encounter id>`.

Consent (a validated update, before anything is processed) -> the encounter's context from the EHR ->
speech to text and diarization on careflow-stt (audio only; a supplied diarized transcript skips them)
-> de-identification, refused if an identifier of the patient survives -> the SOAP note from the AI
gateway (`soap_note`, the specialty's template) -> name and birth date back in, only real billable
ICD-10-CM candidates -> DocumentReference (preliminary) and the physician's review Task -> `sign` or
`discard` (the encounter's physician only), reminders and an escalation while unsigned -> the coder's
`codes` update makes the codes final.  A timer 45 minutes after the encounter's end escalates to
operations if the note is not in the EHR by then.  Every outcome is named; every decision is audited.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.ambient import AmbientActivities, SpeechActivities
    from careflow.ambient.note import TERMS, edit_distance
    from careflow.ambient.review import (
        CODING_REMINDER,
        CODING_WINDOW,
        CONSENT_WAIT,
        OPERATIONS,
        REVIEW_NOTICES,
        REVIEW_WINDOW,
        SLA_ESCALATION,
        codes_problem,
        consent_problem,
        reviewer_problem,
    )
    from careflow.models.ambient import (
        PIPELINE,
        AmbientStage,
        AmbientStatus,
        CloseRequest,
        CodesRequest,
        CodesReview,
        Consent,
        ContextRequest,
        DiarizeRequest,
        DiscardRequest,
        FinalCodes,
        NoteInput,
        NoteSource,
        PrepareRequest,
        QualityRecord,
        ReviewOutcome,
        SignRequest,
        TranscribeRequest,
        WriteNoteRequest,
    )
    from workflows import retry_rules
    from workflows import search_attributes as sa
    from workflows.ambient_steps import audit, draft, notice, until

_STT_OUTCOMES = {
    "UnreadableAudio": AmbientStage.UNREADABLE_AUDIO,
    "AudioTooShort": AmbientStage.TOO_SHORT,
    "NoSpeech": AmbientStage.NO_SPEECH,
}


def _message(err: ActivityError) -> str:
    return str(getattr(err.cause, "message", err))


def _refuse(problem: str | None) -> None:
    """An update validator's answer: the problem as the caller's error (the update never runs)."""
    if problem is not None:
        raise ValueError(problem)


@workflow.defn(name="AmbientNoteWorkflow")
class AmbientNoteWorkflow:
    def __init__(self) -> None:
        self._s = AmbientStatus()
        self._decision: SignRequest | DiscardRequest | None = None
        self._coder = ""  # who made the codes final
        self._coding = False  # a codes update is being applied
        self._closed = False  # the physician's decision is in the EHR (sign/discard return then)
        self._visible = False

    @workflow.run
    async def run(self, inp: NoteInput) -> AmbientStatus:
        s, wid = self._s, workflow.info().workflow_id
        self._visible = inp.search_attributes
        s.source, s.specialty = inp.source, inp.specialty
        ended = inp.ended_at or workflow.now()
        if self._visible:
            workflow.upsert_search_attributes([sa.SPECIALTY.value_set(inp.specialty.value)])
        asyncio.create_task(self._sla(ended))  # noqa: RUF006 - it ends with the note or the run

        self._stage(AmbientStage.AWAITING_CONSENT)
        if not await until(lambda: s.consent is not None, workflow.now() + CONSENT_WAIT):
            s.reason = f"no consent recorded within {CONSENT_WAIT}"
        elif s.consent is not None:
            verb = "consent-granted" if s.consent.granted else "consent-declined"
            await audit(verb, s.consent.recorded_by, "Consent", "")
            if not s.consent.granted:
                s.reason = "the patient declined ambient recording"
        if s.consent is None or not s.consent.granted:
            if inp.source is NoteSource.AUDIO:
                await retry_rules.execute(retry_rules.AMBIENT_STEP, AmbientActivities.forget, inp.ref)
            return self._end(AmbientStage.NO_CONSENT, s.reason + "; nothing was transcribed")

        self._stage(AmbientStage.READING)
        try:
            ctx = await retry_rules.execute(
                retry_rules.AMBIENT_CONTEXT,
                AmbientActivities.context,
                ContextRequest(
                    encounter_id=inp.encounter_id, physician_id=inp.physician_id, received_at=workflow.now()
                ),
            )
        except ActivityError as err:
            if retry_rules.failure_type(err) not in ("EncounterNotFound", "NoPhysician"):
                raise
            return self._end(AmbientStage.UNKNOWN_ENCOUNTER, _message(err))
        s.physician_id = ctx.physician_id

        transcript_ref = inp.ref
        if inp.source is NoteSource.AUDIO:
            self._stage(AmbientStage.TRANSCRIBING)
            try:
                s.transcript = await retry_rules.execute(
                    retry_rules.AMBIENT_STT,
                    SpeechActivities.transcribe,
                    TranscribeRequest(audio_ref=inp.ref, vocabulary=[*ctx.vocabulary, *TERMS[inp.specialty]]),
                    task_queue=inp.stt_queue,
                )
            except ActivityError as err:
                outcome = _STT_OUTCOMES.get(retry_rules.failure_type(err) or "")
                if outcome is None:
                    raise
                return self._end(outcome, _message(err))
            self._stage(AmbientStage.DIARIZING)
            diarized = await retry_rules.execute(
                retry_rules.AMBIENT_DIARIZE,
                SpeechActivities.diarize,
                DiarizeRequest(
                    audio_ref=inp.ref, transcript_ref=s.transcript.ref, physician_id=ctx.physician_id
                ),
                task_queue=inp.stt_queue,
            )
            s.diarization, transcript_ref = diarized.method, diarized.ref

        self._stage(AmbientStage.DRAFTING)
        try:
            prepared = await retry_rules.execute(
                retry_rules.AMBIENT_PREPARE,
                AmbientActivities.prepare,
                PrepareRequest(transcript_ref=transcript_ref, patient_id=ctx.patient_id),
            )
        except ActivityError as err:
            if retry_rules.failure_type(err) != "PhiLeak":
                raise
            return self._end(AmbientStage.DEID_REFUSED, _message(err) + "; the gateway was not called")
        s.replaced = prepared.replaced
        drafted = await draft(ctx, prepared.text, inp.specialty, inp.encounter_id)
        if drafted.note is None:
            await notice(
                "sla-escalation", "no-draft", OPERATIONS, "no AI draft: the physician writes the note"
            )
            return self._end(AmbientStage.NO_DRAFT, drafted.reason)
        s.engine = drafted.engine

        self._stage(AmbientStage.WRITING)
        written = await retry_rules.execute(
            retry_rules.AMBIENT_WRITE,
            AmbientActivities.write_note,
            WriteNoteRequest(
                workflow_id=wid, context=ctx, specialty=inp.specialty, note=drafted.note, engine=s.engine
            ),
        )
        s.document_id, s.task_id, s.note = written.document_id, written.task_id, written.text
        s.codes, s.dropped_codes, s.gaps = written.codes, written.dropped_codes, written.gaps
        s.note_ready_at = workflow.now()
        s.note_ready_minutes = round((s.note_ready_at - ended).total_seconds() / 60, 2)
        return await self._review(inp, wid)

    async def _review(self, inp: NoteInput, wid: str) -> AmbientStatus:
        s = self._s
        self._stage(AmbientStage.AWAITING_SIGNATURE)
        ready = s.note_ready_at or workflow.now()
        for n, (after, kind) in enumerate(REVIEW_NOTICES, 1):
            if await until(lambda: self._decision is not None, ready + after):
                break
            to = OPERATIONS if kind == "review-escalation" else s.physician_id
            await notice(kind, f"{kind}-{n}", to, f"note unsigned {after} after it was ready")
            s.reminders += kind == "review-reminder"
            s.escalated = s.escalated or kind == "review-escalation"
        if not await until(lambda: self._decision is not None, ready + REVIEW_WINDOW):
            return self._end(
                AmbientStage.UNSIGNED, f"not signed within {REVIEW_WINDOW}: the draft stays preliminary"
            )

        decision = self._decision
        signing = isinstance(decision, SignRequest)
        assert decision is not None
        text = (decision.text or s.note) if isinstance(decision, SignRequest) else ""
        await retry_rules.execute(
            retry_rules.AMBIENT_STEP,
            AmbientActivities.close,
            CloseRequest(
                workflow_id=wid,
                document_id=s.document_id,
                task_id=s.task_id,
                encounter_id=inp.encounter_id,
                signed=signing,
                practitioner_id=decision.practitioner_id,
                text=text,
            ),
        )
        await audit(
            "sign" if signing else "discard", decision.practitioner_id, "DocumentReference", s.document_id
        )
        self._closed = True
        s.edit_distance = round(edit_distance(s.note, text), 4) if signing else None
        verdict = await retry_rules.execute(
            retry_rules.AMBIENT_STEP,
            AmbientActivities.record_review,
            QualityRecord(
                workflow_id=wid,
                encounter_id=inp.encounter_id,
                physician_id=s.physician_id,
                specialty=inp.specialty,
                outcome="signed" if signing else "discarded",
                edit_distance=s.edit_distance,
                signing_minutes=round((workflow.now() - ready).total_seconds() / 60, 2),
                note_ready_minutes=s.note_ready_minutes,
            ),
        )
        if verdict.alert:
            s.quality_alert = True
            mean = f"{(verdict.mean_edit_distance or 0):.0%}"
            await notice(
                "quality-alert",
                "quality-alert",
                OPERATIONS,
                f"Practitioner/{s.physician_id}: last {verdict.physician_notes} notes edited {mean}",
            )
        if not signing:
            return self._end(
                AmbientStage.DISCARDED, "the physician wrote their own note (counted as a rejection)"
            )
        s.signed_by = decision.practitioner_id

        self._stage(AmbientStage.AWAITING_CODING)
        start, n = workflow.now(), 0
        while not await until(
            lambda: s.codes_final, min(workflow.now() + CODING_REMINDER, start + CODING_WINDOW)
        ):
            if workflow.now() >= start + CODING_WINDOW:
                await workflow.wait_condition(workflow.all_handlers_finished)
                return self._end(AmbientStage.COMPLETED, f"signed; codes not reviewed within {CODING_WINDOW}")
            n += 1
            await notice("coding-reminder", f"coding-reminder-{n}", "coding", "candidate codes await review")
        await workflow.wait_condition(workflow.all_handlers_finished)
        await retry_rules.execute(
            retry_rules.AMBIENT_STEP,
            AmbientActivities.record_codes,
            CodesRequest(
                workflow_id=wid,
                document_id=s.document_id,
                candidates=[c.code for c in s.codes],
                review=CodesReview(coder_id=self._coder),
            ),
        )
        return self._end(AmbientStage.COMPLETED, "signed and coded")

    async def _sla(self, ended: datetime) -> None:
        s = self._s
        if await until(lambda: bool(s.document_id) or s.stage.settled, ended + SLA_ESCALATION):
            return
        s.sla_escalated = True
        await notice(
            "sla-escalation",
            "sla-escalation",
            OPERATIONS,
            f"note not in the EHR {SLA_ESCALATION} after the encounter ended (stage {s.stage})",
        )

    # -- updates ---------------------------------------------------------------------------------
    @workflow.update(name="consent")
    def consent(self, req: Consent) -> ReviewOutcome:
        self._s.consent = req  # audited by the run, which acts on it
        return ReviewOutcome(stage=self._s.stage, detail="consent recorded")

    @consent.validator
    def _validate_consent(self, req: Consent) -> None:
        _refuse(consent_problem(self._s))

    @workflow.update(name="sign")
    async def sign(self, req: SignRequest) -> ReviewOutcome:
        """Returns once the DocumentReference is final in the EHR."""
        return await self._decide(req, "signed: DocumentReference/{} is final")

    @sign.validator
    def _validate_sign(self, req: SignRequest) -> None:
        _refuse(reviewer_problem(self._s, self._decision is not None, req.practitioner_id, "sign"))

    @workflow.update(name="discard")
    async def discard(self, req: DiscardRequest) -> ReviewOutcome:
        """Returns once the draft is withdrawn in the EHR."""
        return await self._decide(req, "discarded: DocumentReference/{} withdrawn")

    @discard.validator
    def _validate_discard(self, req: DiscardRequest) -> None:
        _refuse(reviewer_problem(self._s, self._decision is not None, req.practitioner_id, "discard"))

    async def _decide(self, req: SignRequest | DiscardRequest, done: str) -> ReviewOutcome:
        self._decision = req  # the run acts on it; the caller hears once the EHR has it
        await workflow.wait_condition(lambda: self._closed)
        return ReviewOutcome(stage=self._s.stage, detail=done.format(self._s.document_id))

    @workflow.update(name="codes")
    async def codes(self, req: CodesReview) -> FinalCodes:
        s = self._s
        self._coding = True
        final = await retry_rules.execute(
            retry_rules.AMBIENT_STEP,
            AmbientActivities.final_codes,
            CodesRequest(
                workflow_id=workflow.info().workflow_id,
                document_id=s.document_id,
                candidates=[c.code for c in s.codes],
                review=req,
            ),
        )
        s.codes, s.codes_final, self._coder = final.codes, True, req.coder_id
        await audit("codes", req.coder_id, "DocumentReference", s.document_id)
        return final

    @codes.validator
    def _validate_codes(self, req: CodesReview) -> None:
        _refuse(codes_problem(self._s, self._coding, req))

    @workflow.query(name="status")
    def status(self) -> AmbientStatus:
        return self._s

    # -- helpers ---------------------------------------------------------------------------------
    def _end(self, stage: AmbientStage, reason: str) -> AmbientStatus:
        self._s.reason = reason
        self._stage(stage)
        return self._s

    def _stage(self, stage: AmbientStage) -> None:
        self._s.stage = stage
        if self._visible:  # ids and enums only: never PHI
            workflow.upsert_search_attributes(sa.updates(stage.value, pipeline=PIPELINE))

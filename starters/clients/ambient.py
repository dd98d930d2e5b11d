"""Starting and steering ambient notes: one `AmbientNoteWorkflow` per encounter, id
`ambient-note-<encounter id>`.  Every entry point (`POST /v1/encounters/{id}/audio`, `careflow ambient
...`, the demo, the bench, the tests) goes through these functions.

The audio (or the diarized transcript) goes into the PHI store first, encrypted, streamed; the workflow
gets its reference.  A re-upload of the same encounter attaches to the running workflow.  Consent, when
the caller brings it, is the workflow's `consent` update, sent right after the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from datetime import datetime
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowUpdateFailedError

from careflow import task_queues
from careflow.ambient.transcript import Transcript
from careflow.models.ambient import (
    PIPELINE,
    AmbientStage,
    AmbientStatus,
    CodesReview,
    Consent,
    DiscardRequest,
    FinalCodes,
    NoteInput,
    NoteSource,
    ReviewOutcome,
    SignRequest,
    Specialty,
    workflow_id,
)
from careflow.phi_store import PhiStore, Stored
from starters.clients.keyed_start import Started, start_keyed
from starters.clients.updates import execute_audited
from workflows import search_attributes as sa
from workflows.ambient import AmbientNoteWorkflow

FORMATS = {"wav": "RIFF", "flac": "fLaC", "ogg": "OggS"}  # what the upload takes, by its first bytes


def audio_format(head: bytes) -> str | None:
    """wav, flac or ogg by the file's magic bytes; None for anything else."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    return next((k for k, magic in FORMATS.items() if k != "wav" and head.startswith(magic.encode())), None)


async def store_audio(
    phi: PhiStore, chunks: AsyncIterable[bytes], max_bytes: int
) -> tuple[Stored, str | None]:
    """The upload, streamed into the PHI store; its format by the first bytes (None: not audio we take)."""
    head = bytearray()

    async def watched() -> AsyncIterable[bytes]:
        async for chunk in chunks:
            if len(head) < 12:
                head.extend(chunk[: 12 - len(head)])
            yield chunk

    stored = await phi.put_stream("audio", watched(), max_bytes=max_bytes)
    kind = audio_format(bytes(head))
    if kind is None:
        phi.delete(stored.ref)
    return stored, kind


def store_transcript(phi: PhiStore, diarized: str) -> Stored:
    """A supplied `[doctor] ... [patient] ...` transcript (ValueError with the format if it is not one)."""
    return phi.put("transcript", Transcript.supplied(diarized).to_json())


async def submit(
    client: Client,
    encounter_id: str,
    source: NoteSource,
    ref: str,
    *,
    specialty: Specialty = Specialty.PRIMARY_CARE,
    consent: Consent | None = None,
    physician_id: str | None = None,
    ended_at: datetime | None = None,
    tenant_id: str = "default",
    task_queue: str = task_queues.MAIN,
    stt_queue: str = task_queues.STT,
    search_attributes: bool = True,
) -> Started:
    inp = NoteInput(
        encounter_id=encounter_id,
        source=source,
        ref=ref,
        specialty=specialty,
        physician_id=physician_id,
        ended_at=ended_at,
        tenant_id=tenant_id,
        stt_queue=stt_queue,
        search_attributes=search_attributes,
    )
    wid = workflow_id(encounter_id)
    attrs = sa.at_start(PIPELINE, AmbientStage.RECEIVED.value, tenant_id) if search_attributes else None
    started = await start_keyed(
        client, AmbientNoteWorkflow.run, inp, id=wid, task_queue=task_queue, search_attributes=attrs
    )
    if consent is not None:
        try:
            await client.get_workflow_handle(wid).execute_update(AmbientNoteWorkflow.consent, consent)
        except WorkflowUpdateFailedError:
            pass  # a re-upload: consent was recorded with the first one
    return Started(wid, started)


async def status_of(client: Client, wid: str) -> AmbientStatus:
    status: AmbientStatus = await client.get_workflow_handle(wid).query(AmbientNoteWorkflow.status)
    return status


async def wait_for(
    client: Client, wid: str, done: Callable[[AmbientStatus], bool], *, timeout: float = 600.0
) -> AmbientStatus:
    """Poll the status query until `done` (the demo's and tests' wait for a stage)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await status_of(client, wid)
        if done(status) or loop.time() > deadline:
            return status
        await asyncio.sleep(0.5)


async def _decision(
    client: Client,
    wid: str,
    update: Any,
    req: Any,
    pool: asyncpg.Pool,
    actor: str,
    action: str,
    resource: str,
) -> Any:
    return await execute_audited(
        client,
        wid,
        update,
        req,
        audit_pool=pool,
        actor=actor,
        action=action,
        resource_type=resource,
        what="ambient note",
    )


async def record_consent(client: Client, wid: str, consent: Consent, pool: asyncpg.Pool) -> ReviewOutcome:
    return await _decision(
        client, wid, AmbientNoteWorkflow.consent, consent, pool, consent.recorded_by, "consent", "Consent"
    )


async def sign(client: Client, wid: str, req: SignRequest, pool: asyncpg.Pool) -> ReviewOutcome:
    actor = f"Practitioner/{req.practitioner_id}"
    return await _decision(
        client, wid, AmbientNoteWorkflow.sign, req, pool, actor, "sign", "DocumentReference"
    )


async def discard(client: Client, wid: str, req: DiscardRequest, pool: asyncpg.Pool) -> ReviewOutcome:
    actor = f"Practitioner/{req.practitioner_id}"
    return await _decision(
        client, wid, AmbientNoteWorkflow.discard, req, pool, actor, "discard", "DocumentReference"
    )


async def review_codes(client: Client, wid: str, req: CodesReview, pool: asyncpg.Pool) -> FinalCodes:
    """The coder's decision; the answer lists added codes the code set refused."""
    return await _decision(
        client, wid, AmbientNoteWorkflow.codes, req, pool, req.coder_id, "codes", "DocumentReference"
    )

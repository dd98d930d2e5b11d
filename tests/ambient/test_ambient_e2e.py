"""Ambient notes end to end on the Temporal dev server with the real activities: the sandbox EHR seeded
with synthetic patients, a visit scripted from one patient's chart and spoken by espeak-ng (two
voices), uploaded through `POST /v1/encounters/{id}/audio` into the encrypted PHI store, transcribed by
faster-whisper and diarized by resemblyzer on a speech queue of its own, de-identified, drafted by the
AI gateway (offline engine), written to the EHR, signed, coded.  Bad audio ends as named outcomes; a
speech worker killed mid-transcription is resumed by another from its last heartbeat."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.worker import Worker

from careflow import task_queues
from careflow.ambient import diarize, store, tts
from careflow.ambient.encounters import Encounter, Speaker, chart, encounter
from careflow.ambient.transcript import Transcript
from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.deid import note_values
from careflow.fhir.client import FhirClient
from careflow.fhir.codes import CONDITIONS
from careflow.fhir.synthetic import generate_ehr
from careflow.models.ambient import (
    AmbientStage,
    AmbientStatus,
    CodesReview,
    Consent,
    NoteSource,
    SignRequest,
    Specialty,
    workflow_id,
)
from careflow.phi_store import PhiStore
from starters.api.app import create_app
from starters.cli.common import last_heartbeat
from starters.clients import ambient as client_of
from starters.clients.updates import ReviewRefused
from tests.support.fhir_sandbox import PREFIX, sandbox_app, serve
from tests.support.processes import start_ready
from tests.support.teams import chart_reader_token
from tests.support.wait import wait_until
from workers.registry import ProcessClients, activities_for, sandbox_runner, workflows_for


@dataclass(frozen=True)
class Visit:
    encounter_id: str
    patient: dict[str, object]
    physician_id: str
    script: Encounter
    conditions: list[str]  # condition keys in the patient's record


@dataclass(frozen=True)
class Ehr:
    base: str
    visits: list[Visit]  # the latest clinic visit of each seeded patient, scripted from their chart


@pytest_asyncio.fixture(scope="module")
async def ehr(database_url: str) -> AsyncIterator[Ehr]:
    data = generate_ehr(seed=31, patients=6, as_of=datetime.now(UTC).date())
    pool = await create_pool(Settings())
    try:
        async with serve(sandbox_app(database_url)) as root:
            async with FhirClient(root + PREFIX, audit=PostgresAuditTrail(pool), actor="test-loader") as fhir:
                for bundle in data.bundles:
                    await fhir.transaction(bundle)
                visits = []
                for profile in data.profiles:
                    [patient] = await fhir.search("Patient", {"identifier": profile.mrn})
                    pid = str(patient["id"])
                    found = await fhir.search("Encounter", {"patient": pid, "class": "AMB"})
                    if not found:
                        continue
                    latest = max(found, key=lambda e: str(e["period"]["end"]))
                    resources = [patient, *await fhir.search("Condition", {"patient": pid})]
                    resources += await fhir.search("MedicationRequest", {"patient": pid})
                    _, conditions, meds = chart(resources)
                    script = encounter(
                        patient, conditions, meds, Specialty.PRIMARY_CARE, 1.0, seed=len(visits)
                    )
                    physician = str(latest["participant"][0]["individual"]["reference"]).removeprefix(
                        "Practitioner/"
                    )
                    visits.append(Visit(str(latest["id"]), patient, physician, script, conditions))
            yield Ehr(root + PREFIX, visits)
    finally:
        await pool.close()


@pytest_asyncio.fixture
async def worker(client: Client, task_queue: str, ehr: Ehr) -> AsyncIterator[str]:
    """careflow-main's workflows and activities on the test's queue, and an in-process speech worker
    on `<queue>-stt`; yields the speech queue."""
    pool = await create_pool(Settings())
    settings = Settings(fhir_base_url=ehr.base)
    clients = ProcessClients(settings, pool, client.data_converter.payload_codec, f"worker-{task_queue}")
    stt = f"{task_queue}-stt"
    try:
        async with (
            Worker(
                client,
                task_queue=task_queue,
                workflows=workflows_for(task_queues.MAIN),
                activities=activities_for(task_queues.MAIN, clients),
                workflow_runner=sandbox_runner(),
            ),
            Worker(client, task_queue=stt, activities=activities_for(task_queues.STT, clients)),
        ):
            yield stt
    finally:
        await pool.close()


@dataclass
class Api:
    http: httpx.AsyncClient
    token: str

    async def upload(self, encounter_id: str, body: bytes, **params: str) -> httpx.Response:
        return await self.http.post(
            f"/v1/encounters/{encounter_id}/audio",
            content=body,
            params=params,
            headers={"x-api-key": self.token, "content-type": "audio/flac"},
        )


@pytest_asyncio.fixture
async def api(settings: Settings, task_queue: str) -> AsyncIterator[Api]:
    app = create_app(settings)
    app.state.ambient_task_queue = task_queue
    app.state.ambient_stt_queue = f"{task_queue}-stt"
    token = await chart_reader_token(settings)
    async with serve(app) as root, httpx.AsyncClient(base_url=root, timeout=60) as http:
        yield Api(http, token)


async def enroll(settings: Settings, physician_id: str) -> None:
    said = tts.speak(
        "Good morning. Let me listen to your chest. We will review the results next week.",
        tts.VOICES[Speaker.DOCTOR],
    )
    pool = await create_pool(settings)
    try:
        await store.save_profile(
            pool, physician_id, diarize.embed(diarize.encoder(), said), len(said) / 16_000
        )
    finally:
        await pool.close()


def spoken(script: Encounter) -> bytes:
    return tts.to_flac(tts.speak_turns(script.turns, noise_db=-50.0).audio)


def text_of(doc: dict) -> str:  # type: ignore[type-arg]
    return base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()


async def ready(client: Client, wid: str) -> AmbientStatus:
    return await client_of.wait_for(
        client, wid, lambda s: s.stage is AmbientStage.AWAITING_SIGNATURE or s.stage.settled, timeout=300
    )


async def test_badge_audio_through_the_api_to_a_signed_coded_note(
    client: Client, settings: Settings, ehr: Ehr, api: Api, worker: str
) -> None:
    visit = ehr.visits[0]
    await enroll(settings, visit.physician_id)
    audio = spoken(visit.script)
    answer = await api.upload(visit.encounter_id, audio, consent_recorded_by=visit.physician_id)
    assert answer.status_code == 202, answer.text
    wid = answer.json()["workflow_id"]
    assert (wid, answer.json()["started"]) == (workflow_id(visit.encounter_id), True)
    again = await api.upload(visit.encounter_id, audio, consent_recorded_by=visit.physician_id)
    assert again.status_code == 202 and again.json()["started"] is False  # a re-upload attaches

    st = await ready(client, wid)
    assert st.stage is AmbientStage.AWAITING_SIGNATURE, st.reason
    assert (
        st.transcript is not None
        and st.transcript.words > 60
        and st.transcript.engine.startswith("faster-whisper/")
    )
    assert st.diarization == "voice-profile" and st.physician_id == visit.physician_id
    assert (
        st.replaced.get("PATIENT", 0) >= 1 and st.replaced.get("DOB", 0) >= 1
    )  # what never reached the gateway
    assert st.engine.startswith("offline/")
    in_record = {c.icd10 for k, c in CONDITIONS.items() if k in visit.conditions}
    expected = set(visit.script.expected_codes) & in_record  # the offline engine codes from the record
    assert expected and expected <= {c.code for c in st.codes}, (expected, st.codes)

    async with httpx.AsyncClient(base_url=ehr.base, timeout=30) as fhir:
        doc = (await fhir.get(f"/DocumentReference/{st.document_id}")).json()
        task = (await fhir.get(f"/Task/{st.task_id}")).json()
    assert (
        doc["docStatus"] == "preliminary"
        and doc["context"]["encounter"][0]["reference"] == f"Encounter/{visit.encounter_id}"
    )
    ext = {e["url"].rsplit("/", 1)[1]: e for e in doc["extension"]}
    assert (
        ext["ai-generated"]["valueBoolean"] is True
        and ext["encounter-id"]["valueString"] == visit.encounter_id
    )
    assert ext["model-version"]["valueString"] == st.engine
    names = note_values(visit.patient)
    assert "[PATIENT]" not in text_of(doc) or names  # re-identified where the draft names the patient
    assert (
        task["owner"]["reference"] == f"Practitioner/{visit.physician_id}" and task["status"] == "requested"
    )

    pool = await create_pool(settings)
    try:
        with pytest.raises(ReviewRefused) as wrong:
            await client_of.sign(client, wid, SignRequest(practitioner_id="someone-else"), pool)
        assert "only the encounter's physician" in wrong.value.reason
        refused = await pool.fetchval(
            "SELECT count(*) FROM audit_events WHERE workflow_id = $1 AND outcome = 'rejected'", wid
        )
        assert refused == 1
        edited = st.note + "\nPlan addendum: recheck in four weeks."
        await client_of.sign(client, wid, SignRequest(practitioner_id=visit.physician_id, text=edited), pool)
        final = await client_of.review_codes(client, wid, CodesReview(coder_id="coder-7"), pool)
        done = await client.get_workflow_handle(wid, result_type=AmbientStatus).result()
        row = await pool.fetchrow("SELECT * FROM ambient_notes WHERE workflow_id = $1", wid)
    finally:
        await pool.close()
    assert (
        done.stage is AmbientStage.COMPLETED
        and done.edit_distance is not None
        and 0 < done.edit_distance < 0.2
    )
    assert [c.code for c in final.codes] == [c.code for c in st.codes]
    assert (
        row["outcome"] == "signed"
        and row["edit_distance"] == done.edit_distance
        and row["coded_by"] == "coder-7"
    )
    assert json.loads(row["codes"]) and row["note_ready_minutes"] < 60
    async with httpx.AsyncClient(base_url=ehr.base, timeout=30) as fhir:
        doc = (await fhir.get(f"/DocumentReference/{st.document_id}")).json()
        task = (await fhir.get(f"/Task/{st.task_id}")).json()
    assert doc["docStatus"] == "final" and text_of(doc) == edited
    assert (
        doc["authenticator"]["reference"] == f"Practitioner/{visit.physician_id}"
        and task["status"] == "completed"
    )


async def test_what_is_not_an_encounter_recording_is_refused_or_ends_named(
    client: Client, settings: Settings, ehr: Ehr, api: Api, worker: str
) -> None:
    visit = ehr.visits[1]
    assert (await api.upload(visit.encounter_id, b"just some text, not audio")).status_code == 415
    assert (await api.upload(visit.encounter_id, b"RIFF", specialty="dermatology")).status_code == 400
    anonymous = await api.http.post(f"/v1/encounters/{visit.encounter_id}/audio", content=b"RIFF")
    assert anonymous.status_code == 401

    short = tts.to_flac(tts.speak("Hello, this is too short.", tts.VOICES[Speaker.DOCTOR]))
    rng = np.random.default_rng(3)
    noise = tts.to_flac((rng.normal(0, 0.003, 16_000 * 60)).astype(np.float32))  # a minute of room noise
    garbled = b"RIFF\x00\x10\x00\x00WAVEfmt " + os.urandom(4000)
    outcomes = {}
    for n, (body, want) in enumerate(
        (
            (short, AmbientStage.TOO_SHORT),
            (noise, AmbientStage.NO_SPEECH),
            (garbled, AmbientStage.UNREADABLE_AUDIO),
        )
    ):
        encounter_id = ehr.visits[1 + n].encounter_id
        answer = await api.upload(encounter_id, body, consent_recorded_by=visit.physician_id)
        assert answer.status_code == 202
        done = await client.get_workflow_handle(
            answer.json()["workflow_id"], result_type=AmbientStatus
        ).result()
        outcomes[want] = done
        assert done.stage is want, done.reason
        assert not done.document_id  # nothing half-written
    assert "at least 10 s" in outcomes[AmbientStage.TOO_SHORT].reason
    assert outcomes[AmbientStage.NO_SPEECH].reason.startswith("no speech in 60 s")


async def start_speech_worker(queue: str) -> asyncio.subprocess.Process:
    return await start_ready("queue_worker", task_queues.STT, queue, timeout=120)


async def test_a_speech_worker_killed_mid_transcription_is_resumed_from_its_last_segment(
    client: Client, settings: Settings, ehr: Ehr, task_queue: str, tmp_path: Path
) -> None:
    pool = await create_pool(Settings())
    clients = ProcessClients(Settings(fhir_base_url=ehr.base), pool, client.data_converter.payload_codec, "w")
    stt = f"{task_queue}-killed-stt"
    visit = ehr.visits[-1]
    script = encounter(visit.patient, [], [], Specialty.ORTHOPEDICS, 2.5, seed=99)  # type: ignore[arg-type]
    stored = PhiStore.of(settings).put("audio", spoken(script))
    procs = [await start_speech_worker(stt)]
    try:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=workflows_for(task_queues.MAIN),
            activities=activities_for(task_queues.MAIN, clients),
            workflow_runner=sandbox_runner(),
        ):
            started = await client_of.submit(
                client,
                visit.encounter_id,
                NoteSource.AUDIO,
                stored.ref,
                specialty=Specialty.ORTHOPEDICS,
                consent=Consent(granted=True, recorded_by=visit.physician_id),
                task_queue=task_queue,
                stt_queue=stt,
            )
            handle = client.get_workflow_handle(started.workflow_id)

            beat = await wait_until(
                lambda: last_heartbeat(client, handle),
                timeout=120,
                what="a first heartbeat of finished segments",
            )
            os.kill(procs[0].pid, signal.SIGKILL)  # mid-transcription
            await procs[0].wait()
            procs.append(await start_speech_worker(stt))
            st = await client_of.wait_for(
                client, started.workflow_id, lambda s: s.transcript is not None, timeout=300
            )
            assert st.transcript is not None
            assert st.transcript.resumed_from >= beat["seconds"] > 0  # not from zero
            assert beat["partial"].startswith("transcript/") and not PhiStore.of(settings).exists(
                beat["partial"]
            )
            transcript = Transcript.from_json(PhiStore.of(settings).read(st.transcript.ref))
            starts = [x.start for x in transcript.lines]
            assert starts == sorted(starts) and len(set(starts)) == len(starts)  # nothing transcribed twice
            assert transcript.audio_seconds > 120 and st.transcript.words > 200
            await handle.terminate("test over")
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await pool.close()

"""`careflow demo ambient` (`make demo-ambient`), declared by the ambient pipeline (workers/pipelines.py).

Three clinic visits of sandbox-EHR patients, scripted from their own conditions and medications: two
spoken aloud (espeak-ng, two voices) and uploaded as badge audio, one supplied as a diarized transcript.
Consent is recorded with each; the physicians' voices are enrolled first.  A progress bar follows each
visit through speech to text, diarization, de-identification and drafting; the first note is printed,
signed with an edit (edit distance printed) and coded; ids, Web UI links and how to sign the others.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from temporalio.client import Client
from temporalio.service import RPCError

from careflow.ambient import diarize, store, tts
from careflow.ambient.encounters import Encounter, Speaker, chart, encounter
from careflow.config import Settings, load_settings
from careflow.models.ambient import (
    AmbientStage,
    AmbientStatus,
    CodesReview,
    SignRequest,
    Specialty,
    workflow_id,
)
from careflow.security.logging import configure_logging
from starters.cli.ambient import console, show_status, submit_file
from starters.cli.common import CliError, IdTable, cli_connect, cli_fhir, cli_pool
from starters.clients import ambient as client_of

DEMO_ACTOR = "careflow-demo"
PLAN = (
    (Specialty.PRIMARY_CARE, "audio"),
    (Specialty.CARDIOLOGY, "audio"),
    (Specialty.ORTHOPEDICS, "transcript"),
)
# Stages in order, for the progress bar.
STEPS = [
    AmbientStage.AWAITING_CONSENT,
    AmbientStage.READING,
    AmbientStage.TRANSCRIBING,
    AmbientStage.DIARIZING,
    AmbientStage.DRAFTING,
    AmbientStage.WRITING,
    AmbientStage.AWAITING_SIGNATURE,
]


@dataclass(frozen=True)
class Visit:
    encounter_id: str
    physician_id: str
    script: Encounter
    mode: str  # audio | transcript


async def pick_visits(
    settings: Settings, client: Client, minutes: float, plan: Sequence[tuple[Specialty, str]] = PLAN
) -> list[Visit]:
    """The latest finished clinic visits of different patients that have no note workflow yet, one per
    (specialty, audio | transcript) of `plan`, each scripted from the patient's chart."""
    visits: list[Visit] = []
    async with cli_fhir(settings, DEMO_ACTOR) as fhir:
        found = await fhir.search("Encounter", {"class": "AMB", "status": "finished"})
        found.sort(key=lambda e: str((e.get("period") or {}).get("end", "")), reverse=True)
        patients: set[str] = set()
        for enc in found:
            pid = str(enc["subject"]["reference"]).removeprefix("Patient/")
            if pid in patients or await _has_workflow(client, workflow_id(str(enc["id"]))):
                continue
            resources: list[dict[str, Any]] = [await fhir.read("Patient", pid)]
            for rtype in ("Condition", "MedicationRequest"):
                resources += await fhir.search(rtype, {"patient": pid})
            patient, conditions, meds = chart(resources)
            specialty, mode = plan[len(visits)]
            script = encounter(patient, conditions, meds, specialty, minutes, seed=len(visits) + 1)
            physician = str(enc["participant"][0]["individual"]["reference"]).removeprefix("Practitioner/")
            visits.append(Visit(str(enc["id"]), physician, script, mode))
            patients.add(pid)
            if len(visits) == len(plan):
                return visits
    raise CliError(
        f"fewer than {len(plan)} clinic visits without a note in the EHR: `careflow seed ehr --patients 40`"
    )


async def _has_workflow(client: Client, wid: str) -> bool:
    try:
        await client.get_workflow_handle(wid).describe()
    except RPCError:
        return False
    return True


async def enroll(settings: Settings, physicians: set[str]) -> None:
    """Each physician's voice profile, from a short recording of the demo's doctor voice."""
    said = tts.speak(
        "Good morning. Let me listen to your chest. We will review the results next week.",
        tts.VOICES[Speaker.DOCTOR],
    )
    vec = await asyncio.to_thread(lambda: diarize.embed(diarize.encoder(), said))
    pool = await cli_pool(settings)
    try:
        for p in sorted(physicians):
            await store.save_profile(pool, p, vec, len(said) / 16_000)
    finally:
        await pool.close()


async def run_demo(settings: Settings, minutes: float) -> None:
    client = await cli_connect(settings)
    visits = await pick_visits(settings, client, minutes)
    await enroll(settings, {v.physician_id for v in visits})
    console.print(f"enrolled the voices of {len({v.physician_id for v in visits})} physicians")
    with tempfile.TemporaryDirectory(prefix="careflow-demo-") as tmp:
        wids = []
        for v in visits:
            path = Path(tmp) / f"{v.encounter_id}.{'flac' if v.mode == 'audio' else 'txt'}"
            if v.mode == "audio":
                spoken = await asyncio.to_thread(tts.speak_turns, v.script.turns, noise_db=-50.0)
                path.write_bytes(tts.to_flac(spoken.audio))
                what = f"{spoken.seconds / 60:.1f} min of badge audio"
            else:
                path.write_text(v.script.diarized())
                what = f"a diarized transcript of {v.script.words} words"
            started = await submit_file(
                settings,
                client,
                path,
                v.encounter_id,
                transcript=v.mode != "audio",
                specialty=v.script.specialty,
                consent_by=v.physician_id,
            )
            wids.append(started.workflow_id)
            console.print(
                f"{escape(started.workflow_id)}: {v.script.specialty.value}, {what}, consent recorded"
            )
    statuses = await follow(client, wids)

    first, st = wids[0], statuses[0]
    show_status(settings, first, st)
    if st.stage is AmbientStage.AWAITING_SIGNATURE:
        edited = st.note + "\nAddendum: discussed the plan with the patient, who agrees."
        pool = await cli_pool(settings)
        try:
            await client_of.sign(
                client, first, SignRequest(practitioner_id=st.physician_id, text=edited), pool
            )
            final = await client_of.review_codes(client, first, CodesReview(coder_id="demo-coder"), pool)
        finally:
            await pool.close()
        done = await client.get_workflow_handle(first, result_type=AmbientStatus).result()
        codes = ", ".join(c.code for c in final.codes) or "none"
        console.print(
            f"signed by Practitioner/{st.physician_id} with an addendum: edit distance "
            f"{(done.edit_distance or 0):.1%}; codes final: {codes}"
        )
    summary(settings, wids, await asyncio.gather(*(client_of.status_of(client, w) for w in wids)))


async def follow(client: Client, wids: list[str]) -> list[AmbientStatus]:
    """A bar per visit, moving through the stages until each note awaits its signature (or ends)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks = {w: bar.add_task(w, total=len(STEPS), stage="received") for w in wids}

        async def one(w: str) -> AmbientStatus:
            def moved(s: AmbientStatus) -> bool:
                step = STEPS.index(s.stage) + 1 if s.stage in STEPS else len(STEPS)
                bar.update(tasks[w], completed=step, stage=s.stage.value)
                return s.stage is AmbientStage.AWAITING_SIGNATURE or s.stage.settled

            return await client_of.wait_for(client, w, moved, timeout=900)

        return list(await asyncio.gather(*(one(w) for w in wids)))


def summary(settings: Settings, wids: list[str], statuses: list[AmbientStatus]) -> None:
    table = IdTable("workflow id", "stage", "words", "RTF", "ready (min)", "document", ids=["workflow id"])
    for w, s in zip(wids, statuses, strict=True):
        t = s.transcript
        rtf = f"{t.processing_seconds / t.audio_seconds:.2f}" if t and t.audio_seconds else "-"
        words = str(t.words) if t else "supplied"
        ready = f"{s.note_ready_minutes:.1f}" if s.note_ready_minutes is not None else "-"
        table.add_row(escape(w), s.stage.value, words, rtf, ready, f"DocumentReference/{s.document_id}")
    console.print(table)
    for w, s in zip(wids, statuses, strict=True):
        console.print(f"  {escape(settings.workflow_url(w))}")
        if s.stage is AmbientStage.AWAITING_SIGNATURE:
            console.print(f"    sign: careflow ambient sign {escape(w)} --practitioner {s.physician_id}")


def ambient(
    minutes: Annotated[float, typer.Option(help="Length of each scripted visit.")] = 1.5,
) -> None:
    """Three visits to notes: badge audio and a transcript, consent, progress, one signed and coded.

    Declared as the ambient pipeline's demo (workers/pipelines.py): `careflow demo ambient`."""
    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    asyncio.run(run_demo(settings, minutes))

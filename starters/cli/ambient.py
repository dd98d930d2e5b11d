"""`careflow ambient ...`: ambient clinical documentation (seed P4, P14).

submit (audio or a diarized transcript) | consent | enroll | show | list | sign | discard | codes
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape
from temporalio.client import Client

from careflow import task_queues
from careflow.config import Settings
from careflow.models.ambient import (
    PIPELINE,
    WORKFLOW_ID_PREFIX,
    AmbientStatus,
    CodesReview,
    Consent,
    DiscardRequest,
    NoteSource,
    SignRequest,
    Specialty,
)
from careflow.phi_store import PhiStore
from starters.cli.common import (
    CliError,
    IdTable,
    cli_connect,
    cli_pool,
    cli_settings,
    find_workflow,
    make_console,
)
from starters.clients import ambient as client_of
from starters.clients.keyed_start import Started
from starters.clients.updates import ReviewRefused
from starters.clients.visibility import list_pipeline, type_name
from workflows.ambient import AmbientNoteWorkflow

ambient_app = typer.Typer(
    name="ambient", help="Ambient notes: encounter audio to a signed SOAP note.", no_args_is_help=True
)
console = make_console()
CHUNK = 1024 * 1024


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


async def resolve(client: Client, given: str) -> str:
    return await find_workflow(
        client,
        given,
        prefix=WORKFLOW_ID_PREFIX,
        workflow_type=type_name(AmbientNoteWorkflow),
        what="ambient note",
        listing="careflow ambient list",
    )


async def submit_file(
    settings: Settings,
    client: Client,
    path: Path,
    encounter: str,
    *,
    transcript: bool,
    specialty: Specialty,
    consent_by: str | None,
    physician: str | None = None,
    task_queue: str | None = None,
) -> Started:
    """The file into the PHI store (audio streamed; a transcript checked for its speaker tags), then
    the workflow; CliError for what cannot be taken."""
    phi = PhiStore.of(settings)
    if transcript:
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            ref = client_of.store_transcript(phi, text).ref
        except ValueError as exc:
            raise CliError(f"{path}: {exc}") from None
    else:
        stored, kind = await client_of.store_audio(phi, _chunks(path), settings.api_max_audio_bytes)
        if kind is None:
            raise CliError(f"{path}: not WAV, FLAC or OGG audio")
        ref = stored.ref
    consent = Consent(granted=True, recorded_by=consent_by) if consent_by else None
    return await client_of.submit(
        client,
        encounter,
        NoteSource.TRANSCRIPT if transcript else NoteSource.AUDIO,
        ref,
        specialty=specialty,
        consent=consent,
        physician_id=physician,
        task_queue=task_queue or task_queues.MAIN,
    )


def show_status(settings: Settings, wid: str, st: AmbientStatus, *, note: bool = True) -> None:
    console.print(
        f"[bold]{escape(wid)}[/bold]  stage {st.stage}" + (f" ({escape(st.reason)})" if st.reason else "")
    )
    if st.transcript:
        t = st.transcript
        rtf = t.processing_seconds / t.audio_seconds if t.audio_seconds else 0
        console.print(
            f"  transcript     : {t.words} words, {t.segments} segments, {t.audio_seconds:.0f} s of audio, "
            f"{t.processing_seconds:.1f} s to transcribe (RTF {rtf:.2f}), {escape(t.engine)}"
        )
    if st.diarization:
        console.print(f"  speakers       : {st.diarization}")
    if st.replaced:
        console.print("  de-identified  : " + ", ".join(f"{n} {k}" for k, n in sorted(st.replaced.items())))
    if st.document_id:
        console.print(f"  EHR            : DocumentReference/{st.document_id} (review Task/{st.task_id})")
    if st.note_ready_minutes is not None:
        console.print(f"  note ready     : {st.note_ready_minutes:.1f} min after the encounter (SLA 60)")
    if note and st.note:
        console.print("\n" + escape(st.note) + "\n")
    for g in st.gaps:
        console.print(f"  gap: {escape(g)}")
    if st.codes:
        state = "final" if st.codes_final else "candidates (a coder decides)"
        console.print(
            f"  ICD-10-CM {state}: " + ", ".join(f"{c.code} {escape(c.description)}" for c in st.codes)
        )
    for d in st.dropped_codes:
        console.print(f"  dropped code: {escape(d)}")
    if st.edit_distance is not None:
        console.print(f"  signed by Practitioner/{st.signed_by}, edit distance {st.edit_distance:.1%}")
    console.print(f"  Web UI         : {escape(settings.workflow_url(wid))}")


Encounter = Annotated[str, typer.Option("--encounter", help="The EHR's Encounter id.")]
SpecialtyOpt = Annotated[Specialty, typer.Option(help="The note's specialty template.")]
Workflow = Annotated[str, typer.Argument(help="Workflow id or encounter id.")]
Practitioner = Annotated[
    str, typer.Option("--practitioner", help="Practitioner id (the encounter's physician).")
]


@ambient_app.command("submit")
def submit_cmd(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="WAV/FLAC/OGG, or a transcript")
    ],
    encounter: Encounter,
    transcript: Annotated[
        bool, typer.Option("--transcript", help="FILE is a diarized `[doctor] ... [patient] ...` text.")
    ] = False,
    specialty: SpecialtyOpt = Specialty.PRIMARY_CARE,
    consent_by: Annotated[
        str | None, typer.Option(help="Practitioner who recorded the patient's consent.")
    ] = None,
    physician: Annotated[
        str | None, typer.Option(help="The badge owner (default: the encounter's attender).")
    ] = None,
) -> None:
    """Draft the encounter's note from its audio (or transcript); consent first."""
    settings = cli_settings()

    async def go() -> Started:
        client = await cli_connect(settings)
        return await submit_file(
            settings,
            client,
            file,
            encounter,
            transcript=transcript,
            specialty=specialty,
            consent_by=consent_by,
            physician=physician,
        )

    started = asyncio.run(go())
    verb = "started" if started.started else "attached to the running"
    wid = started.workflow_id
    console.print(f"{verb} {escape(wid)}\n  Web UI: {escape(settings.workflow_url(wid))}")
    if not consent_by:
        console.print(
            f"  waiting for consent: careflow ambient consent {escape(encounter)} --by <practitioner>"
        )


@ambient_app.command("consent")
def consent_cmd(
    workflow: Workflow,
    by: Annotated[str, typer.Option("--by", help="Who asked the patient.")],
    declined: Annotated[
        bool, typer.Option("--declined", help="The patient declined: nothing is transcribed.")
    ] = False,
    method: Annotated[str, typer.Option(help="verbal | written")] = "verbal",
) -> None:
    """Record the patient's consent to ambient recording (or that they declined)."""
    if method not in ("verbal", "written"):
        raise CliError("--method is verbal or written")
    consent = Consent(granted=not declined, recorded_by=by, method=method)
    _decide(workflow, lambda c, w, p: client_of.record_consent(c, w, consent, p))


@ambient_app.command("sign")
def sign_cmd(
    workflow: Workflow,
    practitioner: Practitioner,
    text_file: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Your edited note.")
    ] = None,
) -> None:
    """Sign the note (with your edits, if any): the DocumentReference becomes final."""
    text = text_file.read_text() if text_file else None
    _decide(
        workflow,
        lambda c, w, p: client_of.sign(c, w, SignRequest(practitioner_id=practitioner, text=text), p),
    )


@ambient_app.command("discard")
def discard_cmd(
    workflow: Workflow,
    practitioner: Practitioner,
    reason: Annotated[str, typer.Option(help="Why (counted as a rejection of the draft).")] = "",
) -> None:
    """Discard the draft: you write your own note."""
    _decide(
        workflow,
        lambda c, w, p: client_of.discard(
            c, w, DiscardRequest(practitioner_id=practitioner, reason=reason), p
        ),
    )


@ambient_app.command("codes")
def codes_cmd(
    workflow: Workflow,
    coder: Annotated[str, typer.Option(help="The coder's user id.")],
    remove: Annotated[list[str] | None, typer.Option(help="A candidate code to remove (repeatable).")] = None,
    add: Annotated[list[str] | None, typer.Option(help="An ICD-10-CM code to add (repeatable).")] = None,
) -> None:
    """Accept the candidate codes (less --remove, plus --add): they become final."""
    try:
        review = CodesReview(coder_id=coder, remove=remove or [], add=add or [])
    except ValidationError as exc:
        raise CliError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
    _decide(workflow, lambda c, w, p: client_of.review_codes(c, w, review, p))


def _decide(workflow: str, act: object) -> None:
    settings = cli_settings()

    async def go() -> tuple[str, object]:
        client = await cli_connect(settings)
        wid = await resolve(client, workflow)
        pool = await cli_pool(settings)
        try:
            return wid, await act(client, wid, pool)  # type: ignore[operator]
        finally:
            await pool.close()

    try:
        wid, outcome = asyncio.run(go())
    except ReviewRefused as exc:
        console.print(f"[red]refused[/red]: {escape(exc.reason)} (the attempt is in the audit trail)")
        raise typer.Exit(1) from None
    console.print(f"{escape(wid)}: {escape(str(outcome))}")


@ambient_app.command("enroll")
def enroll_cmd(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A minute of the physician speaking")
    ],
    practitioner: Practitioner,
) -> None:
    """Enroll a physician's voice: diarization labels the speaker nearest it as the physician."""
    from careflow.ambient import diarize, store
    from careflow.ambient.stt import SAMPLE_RATE, load_audio

    settings = cli_settings()
    audio = load_audio(file)
    if len(audio) < 5 * SAMPLE_RATE:
        raise CliError(f"{file}: at least 5 s of the physician's voice is needed")
    vec = diarize.embed(diarize.encoder(), audio)

    async def go() -> None:
        pool = await cli_pool(settings)
        try:
            await store.save_profile(pool, practitioner, vec, len(audio) / SAMPLE_RATE)
        finally:
            await pool.close()

    asyncio.run(go())
    console.print(f"enrolled Practitioner/{escape(practitioner)}: {len(audio) / SAMPLE_RATE:.0f} s of voice")


@ambient_app.command("show")
def show_cmd(workflow: Workflow) -> None:
    """The note's stage, transcript figures, the draft, codes and quality."""
    settings = cli_settings()

    async def go() -> tuple[str, AmbientStatus]:
        client = await cli_connect(settings)
        wid = await resolve(client, workflow)
        return wid, await client_of.status_of(client, wid)

    wid, st = asyncio.run(go())
    show_status(settings, wid, st)


@ambient_app.command("list")
def list_cmd(all_: Annotated[bool, typer.Option("--all", help="Include closed notes.")] = False) -> None:
    """Ambient notes in flight (and failed ones), with their stage."""
    settings = cli_settings()

    async def go() -> list[tuple[str, str, str]]:
        client = await cli_connect(settings)
        return [
            (x.workflow_id, x.stage or "", x.status)
            for x in await list_pipeline(client, PIPELINE, include_closed=all_)
        ]

    table = IdTable("workflow id", "stage", "status", ids=["workflow id"])
    for row in asyncio.run(go()):
        table.add_row(*map(escape, row))
    console.print(table)

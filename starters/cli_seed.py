"""`careflow seed ehr`: generate the synthetic EHR and load it into a FHIR server as transaction Bundles.

Generation is a pure function of (seed, patients, as_of); loading POSTs each Bundle to the FHIR base
URL (a transaction is a POST of the Bundle to the base) through careflow's FhirClient, which records
one PHI-write audit event per Bundle (ids only) in the Postgres audit trail.  Every entry is a
conditional create, so running the same seed twice creates nothing twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings, load_settings
from careflow.fhir.client import FhirClient, FhirError
from careflow.fhir.synthetic import iter_patients, staff_bundle
from careflow.security.logging import configure_logging, get_logger
from starters.cli_common import cli_pool, make_console

app = typer.Typer(help="Synthetic data for the sandbox EHR.", no_args_is_help=True)
console = make_console(stderr=True)
log = get_logger(__name__)

SEED_ACTOR = "careflow-seed"


class LoadError(Exception):
    """A Bundle was refused; the message carries the HTTP status and bundle index only (no PHI)."""


@dataclass
class LoadStats:
    bundles: int = 0
    entries: int = 0
    created: int = 0  # 201s; a re-run of the same seed finds everything (200) and creates 0


Transact = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class BundleLoader:
    """Runs transaction Bundles (through FhirClient.transaction, which audits each one) with bounded
    concurrency and counts what the server created."""

    def __init__(self, transact: Transact, *, concurrency: int = 4) -> None:
        self._transact = transact
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self.stats = LoadStats()

    async def post(self, index: int, bundle: dict[str, Any]) -> dict[str, Any]:
        async with self._slots:
            try:
                response = await self._transact(bundle)
            except FhirError as exc:
                # FhirClient errors carry status and issue codes and locations, never content.
                raise LoadError(f"bundle {index}: {exc}") from None
        statuses = [str(e.get("response", {}).get("status", "")) for e in response.get("entry", [])]
        self.stats.bundles += 1
        self.stats.entries += len(bundle["entry"])
        self.stats.created += sum(s.startswith("201") for s in statuses)
        log.debug("seed.bundle_loaded", bundle_index=index, entries=len(bundle["entry"]))
        return response

    async def load(
        self,
        bundles: Iterable[dict[str, Any]],
        *,
        first_index: int = 0,
        on_done: Callable[[], None] | None = None,
    ) -> LoadStats:
        """Post every Bundle, at most `concurrency` at a time, generating ahead only a little."""
        pending: set[asyncio.Task[dict[str, Any]]] = set()

        async def settle(until: int) -> None:
            nonlocal pending
            while len(pending) > until:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # a refused Bundle stops the run
                    if on_done:
                        on_done()

        try:
            for index, bundle in enumerate(bundles, start=first_index):
                await settle(2 * self._concurrency - 1)
                pending.add(asyncio.create_task(self.post(index, bundle)))
            await settle(0)
        finally:
            for task in pending:
                task.cancel()
        return self.stats


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _parse_as_of(value: str | None) -> date:
    if value is None:
        return datetime.now(UTC).date()  # the CLI picks the date; the generator never reads a clock
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("expected YYYY-MM-DD") from None


async def _load(settings: Settings, seed: int, patients: int, as_of: date, concurrency: int) -> LoadStats:
    pool = await cli_pool(settings)
    try:
        # Large transactions: a generous timeout; every entry is a conditional create, so the client
        # may retry a transaction safely.
        async with FhirClient(
            settings.fhir_base_url, audit=PostgresAuditTrail(pool), actor=SEED_ACTOR, timeout=120.0
        ) as fhir:
            loader = BundleLoader(fhir.transaction, concurrency=concurrency)
            with _progress() as progress:
                task = progress.add_task("seeding patients", total=patients + 1)
                # The staff Bundle goes first and alone: patient Bundles reference its resources.
                await loader.post(0, staff_bundle(seed))
                progress.advance(task)
                patient_bundles = (bundle for _, bundle in iter_patients(seed, patients, as_of))
                return await loader.load(
                    patient_bundles, first_index=1, on_done=lambda: progress.advance(task)
                )
    finally:
        await pool.close()


@app.command("ehr")
def ehr(
    patients: Annotated[int, typer.Option(min=0, help="How many patients.")] = 100,
    seed: Annotated[int, typer.Option(help="Same seed, same patients (byte-identical Bundles).")] = 1,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Reference date YYYY-MM-DD; history ends before it (default: today UTC)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the Bundles as NDJSON to this file instead of loading them.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Bundles in flight.")] = 4,
) -> None:
    """Generate N synthetic patients and load them into the FHIR server (CAREFLOW_FHIR_BASE_URL)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    reference = _parse_as_of(as_of)
    if out is not None:
        with out.open("w", encoding="utf-8") as sink, _progress() as progress:
            task = progress.add_task("generating patients", total=patients + 1)
            sink.write(json.dumps(staff_bundle(seed), separators=(",", ":")) + "\n")
            progress.advance(task)
            for _, bundle in iter_patients(seed, patients, reference):
                sink.write(json.dumps(bundle, separators=(",", ":")) + "\n")
                progress.advance(task)
        console.print(f"wrote {patients + 1} transaction Bundles (seed {seed}, as of {reference}) to {out}")
        return
    try:
        stats = asyncio.run(_load(settings, seed, patients, reference, concurrency))
    except LoadError as exc:
        console.print(f"[red]careflow seed ehr: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"loaded {stats.bundles} Bundles ({stats.entries} entries, {stats.created} created) "
        f"into {settings.fhir_base_url} (seed {seed}, as of {reference})"
    )

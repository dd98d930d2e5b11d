"""`careflow seed ehr`: generate the synthetic EHR and load it into a FHIR server as transaction Bundles.

Generation is a pure function of (seed, patients, as_of); loading POSTs each Bundle to the FHIR base
URL (a transaction is a POST of the Bundle to the base) through careflow's FhirClient, which records
one PHI-write audit event per Bundle (ids only) in the Postgres audit trail.  Every entry is a
conditional create, so running the same seed twice creates nothing twice.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from careflow.config import Settings, load_settings
from careflow.fhir.synthetic import iter_patients, staff_bundle
from careflow.security.logging import configure_logging
from starters.cli.common import cli_pool, make_console
from starters.clients.seed import LoadError, LoadStats, load_synthetic_ehr

app = typer.Typer(help="Synthetic data for the sandbox EHR.", no_args_is_help=True)
console = make_console(stderr=True)


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
        with _progress() as progress:
            task = progress.add_task("seeding patients", total=patients + 1)
            return await load_synthetic_ehr(
                settings, pool, seed, patients, as_of, concurrency, on_bundle=lambda: progress.advance(task)
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

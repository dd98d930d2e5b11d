"""`careflow audit verify | export`: check the hash chain, export FHIR AuditEvents."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from careflow.audit.export import export_since
from careflow.audit.trail import VerifyResult, verify
from starters.cli.common import cli_pool, cli_settings, make_console

app = typer.Typer(help="HIPAA audit trail: verify the hash chain, export AuditEvents.", no_args_is_help=True)
console = make_console(stderr=True)  # stdout carries the export


def parse_since(value: str) -> datetime:
    """YYYY-MM-DD (midnight UTC) or an ISO timestamp (naive means UTC)."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("expected YYYY-MM-DD or an ISO 8601 timestamp") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


@app.command("verify")
def verify_command() -> None:
    """Walk the chain in order; exit 1 naming the first broken row."""
    settings = cli_settings()

    async def go() -> VerifyResult:
        pool = await cli_pool(settings, database_pool_min=1, database_pool_max=1)
        try:
            return await verify(pool)
        finally:
            await pool.close()

    result = asyncio.run(go())
    if result.ok:
        console.print(f"audit chain intact: {result.rows_checked} rows verified, head {result.head_hash}")
        return
    reason = escape(result.reason or "")
    console.print(
        f"[red]audit chain BROKEN at row id {result.first_broken_id}[/red]: {reason} "
        f"({result.rows_checked} rows checked)"
    )
    raise typer.Exit(1)


@app.command("export")
def export_command(
    since: Annotated[
        str | None,
        typer.Option(
            help="Rows that occurred at or after: YYYY-MM-DD or ISO timestamp (default: today, 00:00 UTC)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="NDJSON file to write (default: stdout).")] = None,
) -> None:
    """Write FHIR R4 AuditEvent resources (IHE BALP shapes), one JSON object per line."""
    settings = cli_settings()
    start = parse_since(since or datetime.now(UTC).date().isoformat())

    async def go() -> int:
        pool = await cli_pool(settings, database_pool_min=1, database_pool_max=1)
        sink = out.open("w", encoding="utf-8") if out else sys.stdout
        count = 0
        try:
            async for resource in export_since(pool, start):
                sink.write(json.dumps(resource, separators=(",", ":")) + "\n")
                count += 1
        finally:
            await pool.close()
            if out:
                sink.close()
        return count

    count = asyncio.run(go())
    console.print(
        f"exported {count} AuditEvent resources since {start.isoformat()}" + (f" to {out}" if out else "")
    )

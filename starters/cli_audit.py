"""`careflow audit verify | export`: check the hash chain, export FHIR AuditEvents."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from rich.console import Console

from careflow.audit.export import export_since
from careflow.audit.trail import VerifyResult, verify
from starters.cli_common import cli_settings

app = typer.Typer(help="HIPAA audit trail: verify the hash chain, export AuditEvents.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


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
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await verify(conn)
        finally:
            await conn.close()

    result = asyncio.run(go())
    if result.ok:
        console.print(f"audit chain intact: {result.rows_checked} rows verified, head {result.head_hash}")
        return
    console.print(
        f"[red]audit chain BROKEN at row id {result.first_broken_id}[/red]: {result.reason} "
        f"({result.rows_checked} rows checked)"
    )
    raise typer.Exit(1)


@app.command("export")
def export_command(
    since: Annotated[str, typer.Option(help="Rows that occurred at or after: YYYY-MM-DD or ISO timestamp.")],
    out: Annotated[Path | None, typer.Option(help="NDJSON file to write (default: stdout).")] = None,
) -> None:
    """Write FHIR R4 AuditEvent resources (IHE BALP shapes), one JSON object per line."""
    settings = cli_settings()
    start = parse_since(since)

    async def go() -> int:
        conn = await asyncpg.connect(settings.database_url)
        sink = out.open("w", encoding="utf-8") if out else sys.stdout
        count = 0
        try:
            async for resource in export_since(conn, start):
                sink.write(json.dumps(resource, separators=(",", ":")) + "\n")
                count += 1
        finally:
            await conn.close()
            if out:
                sink.close()
        return count

    count = asyncio.run(go())
    console.print(f"exported {count} AuditEvent resources" + (f" to {out}" if out else ""))

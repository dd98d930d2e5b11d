"""`careflow dr ...`: disaster recovery (seed P20).

failover (follows it) | approve | status | backup (follows it) | backups
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import asyncpg
import typer
from pydantic import ValidationError
from rich.markup import escape
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from careflow.dr import catalog
from careflow.models.dr import WORKFLOW_ID_PREFIX, Approval, FailoverInput, FailoverStatus
from careflow.models.dr_backup import BackupInput, BackupResult
from careflow.validation import error_fields
from starters.cli.common import CliError, cli_connect, cli_pool, cli_settings, find_workflow, make_console
from starters.clients import dr as client_of
from starters.clients import dr_backup as backups_of
from starters.clients.updates import ReviewRefused

dr_app = typer.Typer(
    name="dr", help="Disaster recovery: backups, and failing the database over to its standby."
)
console = make_console()


def describe(st: FailoverStatus) -> str:
    lines = [f"stage: {st.stage.value}" + (f" ({st.reason})" if st.reason else "")]
    a = st.assessment
    if a is not None:
        lines.append(f"primary {a.primary.url}: {'up' if a.primary.up else 'DOWN ' + a.primary.error}")
        if a.standby is not None:
            lag = f", {a.lag_bytes} bytes behind" if a.lag_bytes is not None else ""
            lines.append(f"standby {a.standby.url}: {'up' if a.standby.up else 'DOWN'}{lag}")
    if st.approved_by:
        lines.append(f"approved by {st.approved_by}")
    if st.escalated:
        lines.append("escalated: the next on-call tier was paged")
    if st.verified is not None:
        v = st.verified
        chain = "ok" if v.audit_ok else "BROKEN"
        lines.append(f"verified: first write {v.first_write_at}, audit chain {chain} ({v.audit_rows} rows)")
    for r in st.recovery:
        verdict = "met" if r.met else "MISSED"
        lines.append(
            f"  {r.feature}: RTO {r.rto_s:.1f} s (goal {r.objective_rto_s:.0f} s), RPO {r.rpo}: {verdict}"
        )
    return "\n".join(lines)


async def _resolve(given: str) -> str:
    client = await cli_connect(cli_settings())
    return await find_workflow(
        client, given, prefix=WORKFLOW_ID_PREFIX, workflow_type="DRFailoverWorkflow", what="DR failover",
        listing="temporal workflow list --query \"WorkflowType='DRFailoverWorkflow'\"",
    )  # fmt: skip


@dr_app.command("failover")
def failover(
    incident: Annotated[str, typer.Option(help="The incident id (one failover per incident).")],
    by: Annotated[str, typer.Option(help="Who asks for it.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")],
    automatic: Annotated[bool, typer.Option(help="Do not wait for an operator's approval.")] = False,
    force: Annotated[bool, typer.Option(help="Promote even a standby lagging beyond the RPO guard.")] = False,
    planned: Annotated[bool, typer.Option(help="Switch over from a primary that still answers.")] = False,
) -> None:
    """Fail the database over to its standby: assess, (approve,) fence, promote, switch, verify."""
    settings = cli_settings()
    try:
        inp = FailoverInput(
            incident=incident,
            requested_by=by,
            reason=reason,
            automatic=automatic,
            force=force,
            planned=planned,
        )
    except ValidationError as exc:
        raise CliError(f"invalid failover request: {error_fields(exc)}") from None

    async def run() -> tuple[str, bool, FailoverStatus]:
        client = await cli_connect(settings)
        started = await client_of.start(client, inp)
        if automatic:
            return started.workflow_id, started.started, await client_of.result(client, started.workflow_id)
        return started.workflow_id, started.started, await client_of.assessed(client, started.workflow_id)

    wid, new, st = asyncio.run(run())
    console.print(
        f"{escape(wid)}{'' if new else ' (under way: attached)'}: {escape(settings.workflow_url(wid))}"
    )
    console.print(describe(st))
    if not automatic and st.stage.value == "awaiting-approval":
        console.print(f"approve: careflow dr approve {incident} --by <operator>")


@dr_app.command("approve")
def approve(
    incident: Annotated[str, typer.Argument(help="The incident (or dr-failover-<incident>).")],
    by: Annotated[str, typer.Option(help="The operator who approves.")],
    note: Annotated[str, typer.Option(help="Anything to keep with the approval.")] = "",
) -> None:
    """Approve a failover that waits for an operator."""
    settings = cli_settings()

    async def run() -> FailoverStatus:
        wid = await _resolve(incident)
        client = await cli_connect(settings)
        try:  # a refusal is audited when the database answers; while it is what is down, not
            pool: asyncpg.Pool | None = await cli_pool(settings, database_pool_min=1, database_pool_max=2)
        except CliError:
            pool = None
        try:
            await client_of.approve(client, wid, Approval(by=by, note=note), pool)
        except (WorkflowUpdateFailedError, RPCError, ReviewRefused) as exc:
            raise CliError(f"{wid}: approval refused ({getattr(exc, 'reason', None) or exc})") from None
        finally:
            if pool is not None:
                await pool.close()
        return await client_of.result(client, wid)

    console.print(describe(asyncio.run(run())))


@dr_app.command("status")
def status(
    incident: Annotated[str, typer.Argument(help="The incident (or dr-failover-<incident>).")],
) -> None:
    """Where a failover is, what it found and what it measured."""

    async def run() -> FailoverStatus:
        wid = await _resolve(incident)
        return await client_of.status(await cli_connect(cli_settings()), wid)

    console.print(describe(asyncio.run(run())))


def describe_backup(r: BackupResult) -> str:
    lines = [f"{r.backup_id}: {r.outcome}" + (f" ({r.reason})" if r.reason else "") + f", store {r.store}"]
    if r.base is not None:
        b = r.base
        lines.append(f"base backup: {b.objects} objects, {b.bytes / 1e6:.1f} MB, WAL from {b.start_wal}, "
                     f"restores to {b.data_as_of:%Y-%m-%d %H:%M:%S} UTC and later with the WAL")  # fmt: skip
    if r.outcome == "complete":
        lines.append(
            f"stored: {r.objects} objects, {r.bytes / 1e6:.1f} MB (each with its SHA-256 in the catalog)"
        )
    lines += [f"  skipped {s}" for s in r.skipped]
    if r.pruned is not None and (r.pruned.backups or r.pruned.objects or r.pruned.wal_local):
        p = r.pruned
        lines.append(f"retention: {len(p.backups)} backups expired, {p.objects} objects deleted, "
                     f"{p.wal_local} local WAL files removed, {p.refused} kept by the store")  # fmt: skip
    return "\n".join(lines)


@dr_app.command("backup")
def backup_now(
    by: Annotated[str, typer.Option(help="Who asks for it.")] = "operator",
    wal_only: Annotated[bool, typer.Option("--wal-only", help="Only ship the archived WAL.")] = False,
    keep: Annotated[
        int | None, typer.Option(help="Complete full backups to keep (default: the setting).")
    ] = None,
) -> None:
    """Back up now (what the nightly Schedule does), following it to its end."""
    settings = cli_settings()
    try:
        inp = BackupInput(kind="wal" if wal_only else "full", requested_by=by, keep=keep)
    except ValidationError as exc:
        raise CliError(f"invalid backup request: {error_fields(exc)}") from None

    async def run() -> BackupResult:
        client = await cli_connect(settings)
        wid = await backups_of.start(client, inp)
        console.print(f"{escape(wid)}: {escape(settings.workflow_url(wid))}")
        return await backups_of.follow(client, wid, lambda p: console.print(f"  {p.stage}"))

    result = asyncio.run(run())
    console.print(escape(describe_backup(result)))
    if result.outcome != "complete":
        raise typer.Exit(1)


@dr_app.command("backups")
def list_backups(limit: Annotated[int, typer.Option(min=1, max=500)] = 20) -> None:
    """The backup catalog: each run, its status, size and the moment it restores to."""
    settings = cli_settings()

    async def run() -> list[asyncpg.Record]:
        pool = await cli_pool(settings, database_pool_min=1, database_pool_max=2)
        try:
            return await catalog.recent(pool, limit)
        finally:
            await pool.close()

    for r in asyncio.run(run()):
        as_of = f", restores to {r['data_as_of']:%Y-%m-%d %H:%M:%S}" if r["data_as_of"] else ""
        why = f" ({r['error']})" if r["error"] else ""
        console.print(escape(f"{r['backup_id']}  {r['kind']:4}  {r['status']:8}  {r['objects']:4} objects  "
                             f"{r['bytes'] / 1e6:8.1f} MB  by {r['requested_by']}{as_of}{why}"))  # fmt: skip

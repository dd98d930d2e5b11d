"""`careflow dr ...`: disaster recovery (seed P20).

failover (follows it) | approve | status | failback | return
backup (follows it) | backups | drill (follows it) | report
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import typer
from pydantic import ValidationError
from rich.markup import escape
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from careflow.dr import catalog, report
from careflow.models.dr import WORKFLOW_ID_PREFIX, Approval, FailoverInput, FailoverStatus
from careflow.models.dr_backup import BackupInput, BackupResult
from careflow.models.dr_drill import DrillInput, DrillResult
from careflow.models.dr_failback import FAILBACK_ID_PREFIX, FailbackInput, FailbackStatus
from careflow.validation import error_fields
from starters.cli.common import CliError, cli_connect, cli_pool, cli_settings, find_workflow, make_console
from starters.clients import dr as client_of
from starters.clients import dr_backup as backups_of
from starters.clients import dr_drill as drills_of
from starters.clients.updates import ReviewRefused

dr_app = typer.Typer(
    name="dr", help="Disaster recovery: backups, drills, and failing the database or inference over."
)
console = make_console()
AUDIT_POOL_WAIT_S = 5.0  # the approval does not wait on a database that is down to audit a refusal


def describe(st: FailoverStatus) -> str:
    lines = [f"stage: {st.stage.value}" + (f" ({st.reason})" if st.reason else "")]
    a = st.assessment
    if a is not None:
        lines.append(f"primary {a.primary.url}: {'up' if a.primary.up else 'DOWN ' + a.primary.error}")
        if a.standby is not None:
            lag = f", {a.lag_bytes} bytes behind" if a.lag_bytes is not None else ""
            lines.append(f"standby {a.standby.url}: {'up' if a.standby.up else 'DOWN'}{lag}")
        for server in a.inference:
            lines.append(f"inference {server.provider} {server.url}: {'up' if server.up else 'DOWN'}")
    if st.rerouted is not None:
        for m in st.rerouted.moves:
            to = f"{m.fallback} ({m.model})" if m.fallback else "no fallback: waits"
            phi = "PHI too" if m.phi else "PHI waits for the server"
            lines.append(f"  tier {m.tier}: {m.provider} -> {to}; {phi}")
        if st.rerouted.restored_at is not None:
            lines.append(f"  inference back {st.rerouted.restored_at}: breakers released")
    if st.approved_by:
        lines.append(f"approved by {st.approved_by}")
    if st.escalated:
        lines.append("escalated: the next on-call tier was paged")
    if st.verified is not None:
        v = st.verified
        chain = "ok" if v.audit_ok else "BROKEN"
        lines.append(f"verified: first write {v.first_write_at}, audit chain {chain} ({v.audit_rows} rows)")
        if v.golden_recall is not None:
            base = (
                f" (baseline {v.golden_baseline:.3f})"
                if v.golden_baseline is not None
                else " (no baseline yet)"
            )
            lines.append(
                f"  golden RAG questions: {v.golden_questions}, recall@k {v.golden_recall:.3f}{base}"
            )
        if v.canary_healthy is not None:
            sick = "; ".join(f"{q}: {e}" for q, e in v.canary_unreachable.items())
            lines.append(f"  platform canary: {'healthy' if v.canary_healthy else 'FAILED ' + sick}")
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
            pool: asyncpg.Pool | None = await asyncio.wait_for(
                cli_pool(settings, database_pool_min=1, database_pool_max=2), AUDIT_POOL_WAIT_S
            )
        except (CliError, TimeoutError, asyncpg.PostgresError):
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


def describe_failback(st: FailbackStatus) -> str:
    lines = [f"stage: {st.stage}" + (f" ({st.reason})" if st.reason else "")]
    for r in st.rebuilt:
        how = f"cloned in {r.seconds:.1f} s" if r.cloned else "already streaming"
        lines.append(f"standby {r.standby_url}: {r.state} ({r.sync}), {r.lag_bytes} bytes behind, {how}")
    if st.stage == "standing-by":
        lines.append(f"switch back: careflow dr return {st.incident} --by <operator>")
    return "\n".join(lines)


@dr_app.command("failback")
def failback(
    incident: Annotated[str, typer.Option(help="The failover's incident.")],
    by: Annotated[str, typer.Option(help="Who asks for it.")],
    synchronous: Annotated[bool, typer.Option(help="The rebuilt standby's commits are synchronous.")] = False,
    return_now: Annotated[bool, typer.Option(help="Switch back as soon as the standby streams.")] = False,
) -> None:
    """After a failover: rebuild the fenced site as a standby, then switch back when told (`dr return`)."""
    settings = cli_settings()
    try:
        inp = FailbackInput(
            incident=incident, requested_by=by, synchronous=synchronous, return_now=return_now
        )
    except ValidationError as exc:
        raise CliError(f"invalid failback request: {error_fields(exc)}") from None

    async def run() -> FailbackStatus:
        client = await cli_connect(settings)
        started = await client_of.start_failback(client, inp)
        console.print(f"{escape(started.workflow_id)}: {escape(settings.workflow_url(started.workflow_id))}")
        return await client_of.failback_settled(client, started.workflow_id)

    st = asyncio.run(run())
    console.print(escape(describe_failback(st)))


@dr_app.command("return")
def return_to_site(
    incident: Annotated[str, typer.Argument(help="The incident (or dr-failback-<incident>).")],
    by: Annotated[str, typer.Option(help="The operator who says so.")],
    note: Annotated[str, typer.Option(help="Anything to keep with it.")] = "",
) -> None:
    """Switch the primary back to its original site (a failback standing by)."""
    settings = cli_settings()

    async def run() -> FailbackStatus:
        client = await cli_connect(settings)
        wid = await find_workflow(
            client, incident, prefix=FAILBACK_ID_PREFIX, workflow_type="DRFailbackWorkflow",
            what="DR failback",
            listing="temporal workflow list --query \"WorkflowType='DRFailbackWorkflow'\"",
        )  # fmt: skip
        pool = await cli_pool(settings, database_pool_min=1, database_pool_max=2)
        try:
            await client_of.return_to_site(client, wid, Approval(by=by, note=note), pool)
        except (WorkflowUpdateFailedError, RPCError, ReviewRefused) as exc:
            raise CliError(f"{wid}: return refused ({getattr(exc, 'reason', None) or exc})") from None
        finally:
            await pool.close()
        return await client_of.failback_settled(client, wid)

    console.print(escape(describe_failback(asyncio.run(run()))))


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


def describe_drill(r: DrillResult) -> str:
    lines = [f"{r.drill_id}: {r.outcome}" + (f" at {r.failed_check}: {r.reason}" if r.failed_check else "")]
    if r.plan is not None:
        at = f" to {r.plan.at:%Y-%m-%d %H:%M:%S}" if r.plan.at else " with all its WAL"
        lines.append(f"backup {r.plan.backup_id} (taken {r.plan.data_as_of:%Y-%m-%d %H:%M:%S}) restored{at}")
    c = r.checks
    if c is not None:
        age = "unknown" if c.data_age_s is None else f"{c.data_age_s:.1f} s"
        marker = "restored" if c.marker_restored else "not restored"
        lines += [
            f"restore: {c.restore_s:.1f} s; {c.objects_verified} objects ({c.bytes / 1e6:.1f} MB) and "
            f"{c.wal_files} WAL files checked; data age {age} (the drill's own marker {marker})",
            f"audit chain: {'ok' if c.audit_ok else 'BROKEN'} ({c.audit_rows} rows); "
            f"{sum(1 for x in c.counts if x.restored)} of {len(c.counts)} tables hold rows",
        ]
        if c.golden_questions:
            lines.append(f"golden RAG questions ({c.golden_questions}): recall@k {c.golden_recall} restored, "
                         f"{c.live_recall} live")  # fmt: skip
        lines += [f"  FAILED {f}" for f in c.failures]
    for o in r.objectives:
        age, verdict = "?" if o.data_age_s is None else f"{o.data_age_s:.0f} s", "met" if o.met else "MISSED"
        lines.append(f"  {o.feature}: restore {o.restore_s:.1f} s (RTO {o.objective_rto_s:.0f} s), "
                     f"data age {age} (RPO {o.objective_rpo_s:.0f} s): {verdict}")  # fmt: skip
    return "\n".join(lines)


@dr_app.command("drill")
def drill_now(
    by: Annotated[str, typer.Option(help="Who asks for it.")] = "operator",
    backup: Annotated[str | None, typer.Option(help="The backup to restore (default: the newest).")] = None,
    at: Annotated[
        datetime | None, typer.Option(help="Restore to this moment (UTC; default: all the WAL).")
    ] = None,
) -> None:
    """Restore a backup into a scratch cluster now and check it (what the monthly Schedule does)."""
    settings = cli_settings()
    try:
        inp = DrillInput(
            requested_by=by, backup_id=backup, at=at.replace(tzinfo=at.tzinfo or UTC) if at else None
        )
    except ValidationError as exc:
        raise CliError(f"invalid drill request: {error_fields(exc)}") from None

    async def run() -> DrillResult:
        client = await cli_connect(settings)
        wid = await drills_of.start(client, inp)
        console.print(f"{escape(wid)}: {escape(settings.workflow_url(wid))}")
        return await drills_of.follow(client, wid, lambda p: console.print(f"  {p.stage}"))

    result = asyncio.run(run())
    console.print(escape(describe_drill(result)))
    if result.outcome != "passed":
        raise typer.Exit(1)


@dr_app.command("report")
def report_all(limit: Annotated[int, typer.Option(min=1, max=500)] = 20) -> None:
    """Every drill and failover against the recovery objectives."""
    settings = cli_settings()

    async def run() -> list[report.Line]:
        pool = await cli_pool(settings, database_pool_min=1, database_pool_max=2)
        try:
            return await report.lines(pool, limit)
        finally:
            await pool.close()

    for line in report.render(asyncio.run(run())):
        console.print(escape(line))

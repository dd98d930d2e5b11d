"""`careflow kb ingest|schedule|stats`: the knowledge-base refresh workflow from the command line.

`kb_app` is importable without side effects: other command modules add their own `kb` commands to it
(e.g. `careflow kb eval`).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import WorkflowHandle

from careflow import task_queues
from careflow.config import ConfigError
from careflow.models.kb_refresh import KbProgress
from starters.cli.common import cli_connect, cli_pool, make_console
from starters.clients.kb import ensure_refresh_schedule, schedule_id, start_ingest
from workflows.kb_refresh import KnowledgeBaseRefreshWorkflow

kb_app = typer.Typer(
    name="kb", help="Knowledge base: ingest sources, nightly refresh, statistics.", no_args_is_help=True
)
console = make_console()

_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant the documents belong to.")]


def _tenant(tenant_id: str) -> str:
    if not _TENANT.match(tenant_id):
        raise ConfigError("--tenant", "must be a lowercase slug (a-z, 0-9, '-', '_')")
    return tenant_id


def _folder(folder: Path) -> str:
    if not folder.is_dir():
        raise ConfigError("FOLDER", f"{folder} is not a folder")
    return str(folder.resolve())  # the workers read it: pass an absolute path


async def follow(
    handle: WorkflowHandle[KnowledgeBaseRefreshWorkflow, KbProgress], poll_s: float = 0.5
) -> KbProgress:
    """A progress bar fed by the `progress` query until the workflow completes."""
    result = asyncio.ensure_future(handle.result())
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("planning", total=None)
        while True:
            done, _ = await asyncio.wait({result}, timeout=poll_s)
            p = result.result() if done else await handle.query(KnowledgeBaseRefreshWorkflow.progress)
            bar.update(
                task,
                description=f"{p.stage:<10} {p.chunks_written} chunks written",
                total=p.documents_total or None,
                completed=p.documents_done,
            )
            if done:
                return p


def print_summary(p: KbProgress) -> None:
    table = Table("documents", "inserted", "replaced", "unchanged", "retired", "chunks written",
                  "chunks unchanged", "rejected", "cache entries invalidated")  # fmt: skip
    unchanged = p.documents_done - p.documents_inserted - p.documents_replaced
    unchanged -= len({r.file for r in p.rejected if r.chunk_id is None})
    table.add_row(
        str(p.documents_total),
        str(p.documents_inserted),
        str(p.documents_replaced),
        str(unchanged),
        str(len(p.documents_retired)),
        str(p.chunks_written),
        str(p.chunks_unchanged),
        str(len(p.rejected)),
        str(p.cache_entries_invalidated),
    )
    console.print(table)
    for r in p.rejected:
        what = r.chunk_id or r.document_id or r.file
        console.print(f"  [yellow]rejected[/] {escape(f'{r.file}: {what}: {r.reason}')}")
    for document_id in p.documents_retired:
        console.print(f"  [cyan]retired[/] {escape(document_id)}: its source file left the folder")


@kb_app.command("ingest")
def ingest(
    folder: Path,
    tenant: TenantOption = "default",
    wait: Annotated[bool, typer.Option(help="Follow the progress and print the summary.")] = True,
    batch_size: Annotated[int, typer.Option(help="Documents per ingest activity.")] = 16,
    task_queue: Annotated[str, typer.Option(hidden=True)] = task_queues.MAIN,
) -> None:
    """Ingest a folder of sources (pdf, docx, html, md, txt) through the refresh workflow."""
    from starters.cli.common import cli_settings

    settings = cli_settings()
    tenant_id, source = _tenant(tenant), _folder(folder)

    async def run() -> None:
        handle = await start_ingest(await cli_connect(settings), tenant_id, source, batch_size, task_queue)
        console.print(f"workflow {escape(handle.id)}")
        if wait:
            print_summary(await follow(handle))

    asyncio.run(run())


@kb_app.command("schedule")
def schedule(
    folder: Path,
    tenant: TenantOption = "default",
    cron: Annotated[str, typer.Option(help="When to refresh (cron, UTC).")] = "0 2 * * *",
    batch_size: Annotated[int, typer.Option(help="Documents per ingest activity.")] = 16,
) -> None:
    """Create or update the nightly refresh schedule `kb-refresh-<tenant>` for a folder."""
    from starters.cli.common import cli_settings

    settings = cli_settings()
    tenant_id, source = _tenant(tenant), _folder(folder)

    async def run() -> str:
        return await ensure_refresh_schedule(await cli_connect(settings), tenant_id, source, cron, batch_size)

    done = asyncio.run(run())
    console.print(f"schedule {schedule_id(tenant_id)} {done}: '{escape(cron)}' -> {escape(source)}")


@kb_app.command("stats")
def stats(tenant: TenantOption = "default") -> None:
    """Documents and chunks stored for a tenant, by document type."""
    from careflow.kb import store
    from starters.cli.common import cli_settings

    settings = cli_settings()
    tenant_id = _tenant(tenant)

    async def run() -> store.KbStats:
        pool = await cli_pool(settings)
        try:
            return await store.stats(pool, tenant_id)
        finally:
            await pool.close()

    s = asyncio.run(run())
    table = Table("doc type", "documents", "chunks")
    for doc_type, (documents, chunks) in s.by_doc_type.items():
        table.add_row(doc_type, str(documents), str(chunks))
    table.add_row("[bold]total[/]", str(s.documents), str(s.chunks))
    console.print(table)
    console.print(f"tenant {tenant_id}; last updated {s.last_updated or 'never'}")

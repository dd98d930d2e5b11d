"""A site for backup and drill tests: a real embedded Postgres archiving its WAL, migrated, with the
files a full backup copies (model artifacts, a knowledge-base source folder, a SQLite database standing
where the Temporal dev server's is), and a worker running the DR workflows with their real activities."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.dr_backup import BackupActivities
from activities.dr_drill import DrillActivities
from careflow.config import Settings
from careflow.db import replication
from careflow.db.embedded import EmbeddedPostgres
from careflow.db.migrate import migrate
from careflow.db.pool import create_pool
from careflow.dr.store import FolderStore
from careflow.kb.embed import get_embedder
from careflow.net import free_port
from careflow.notify.notifier import Notifier
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.dr_backup import BackupWorkflow
from workflows.dr_drill import DRDrillWorkflow


@dataclass
class Site:
    pg: EmbeddedPostgres
    pool: asyncpg.Pool
    settings: Settings
    home: Path
    tmp: Path


@asynccontextmanager
async def dr_site(tmp: Path) -> AsyncIterator[Site]:
    pg = EmbeddedPostgres(pgdata=tmp / "pg", port=free_port(), log_file=tmp / "pg.log")
    pg.options = replication.archive_options(pg)
    await asyncio.to_thread(pg.start)
    dsn = await pg.ensure_database("careflow")
    await migrate(dsn)
    home = tmp / "home"
    (home / "mlflow" / "1" / "artifacts").mkdir(parents=True)
    (home / "mlflow" / "1" / "artifacts" / "model.txt").write_text("weights")
    with sqlite3.connect(home / "temporal.db") as db:  # the dev server's file, written while copied
        db.execute("PRAGMA journal_mode=wal")
        db.execute("CREATE TABLE executions (id text)")
        db.executemany("INSERT INTO executions VALUES (?)", [(f"wf-{i}",) for i in range(500)])
    guidelines = tmp / "guidelines"
    guidelines.mkdir()
    (guidelines / "sepsis.md").write_text("# Sepsis bundle\nLactate within 1 hour.\n")
    settings = Settings(home=home, database_url=dsn)
    pool = await create_pool(settings)
    await pool.execute(
        """INSERT INTO kb_documents (tenant_id, document_id, title, source_organization, effective_date,
               doc_type, version, content_hash, source_file, chunk_count, embedding_model, source_root)
           VALUES ('default', 'sepsis', 'Sepsis', 'careflow', '2026-01-01', 'guideline', '1', 'h',
                   'sepsis.md', 1, 'm', $1)""",
        str(guidelines),
    )
    try:
        yield Site(pg, pool, settings, home, tmp)
    finally:
        await pool.close()
        await asyncio.to_thread(pg.remove)


async def new_segment(site: Site) -> str:
    """Some writes, then the WAL segment switched and archived (what archive_timeout does on a timer)."""
    await site.pool.execute("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)")
    await site.pool.executemany("INSERT INTO orders (item) VALUES ($1)", [(f"i-{i}",) for i in range(200)])
    name: str = await site.pool.fetchval("SELECT pg_walfile_name(pg_current_wal_lsn())")
    await site.pool.execute("SELECT pg_switch_wal()")
    await wait_until(lambda: (site.pg.wal_archive_dir / name).exists(), timeout=30, what=f"{name} archived")
    return name


def dr_worker(client: Client, site: Site, store: FolderStore, notifier: Notifier, task_queue: str) -> Worker:
    """BackupWorkflow and DRDrillWorkflow with their real activities on the site."""
    backups = BackupActivities(
        site.settings, site.pool, notifier, store=store, archive_dir=site.pg.wal_archive_dir
    )
    drills = DrillActivities(site.settings, site.pool, notifier, get_embedder, store=store)
    return Worker(
        client, task_queue=task_queue, workflows=[BackupWorkflow, DRDrillWorkflow],
        activities=backups.all() + drills.all(), workflow_runner=sandbox_runner(),
    )  # fmt: skip

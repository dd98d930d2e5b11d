"""Activities of `DRDrillWorkflow` (seed P20): plan (a marker written on the live primary, its WAL
archived, the backup chosen from the store's manifests), restore and check (in one activity, so the
scratch cluster lives and dies on one worker: fetch and checksum every object, replay the WAL, then
row counts, the audit hash chain and the golden RAG questions on the restored copy; the scratch cluster
is always destroyed), and record (the drill against the objectives, operations told when it failed).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import beating
from careflow.audit import trail
from careflow.config import Settings
from careflow.db.embedded import WHEEL_INSTALL, EmbeddedPostgres, EmbeddedPostgresError
from careflow.db.pool import create_pool
from careflow.dr import catalog, restore
from careflow.dr.objectives import GOLDEN_TOLERANCE, OBJECTIVES
from careflow.dr.store import BackupStore, open_store
from careflow.idempotency import step_key
from careflow.kb.embed import Embedder
from careflow.kb.evaluation import evaluate_retrieval, load_golden
from careflow.models.dr_drill import (
    DrillChecks,
    DrillPlan,
    DrillResult,
    ObjectiveCheck,
    PlanRequest,
    TableCount,
)
from careflow.net import free_port
from careflow.notify.notifier import Notifier
from careflow.security.logging import get_logger

log = get_logger("careflow.dr.drill")
ARCHIVED_WITHIN_S = 60.0


def _refuse(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


class DrillActivities:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, notifier: Notifier,
        embedder: Callable[[], Embedder], store: BackupStore | None = None,
    ) -> None:  # fmt: skip
        self._settings, self._pool, self._notifier, self._embedder = settings, pool, notifier, embedder
        self._store_given = store

    def all(self) -> list[Callable[..., Any]]:
        return [self.plan, self.restore_and_check, self.record]

    @property
    def _store(self) -> BackupStore:
        return self._store_given or open_store(self._settings)

    @activity.defn(name="dr.drill.plan")
    async def plan(self, req: PlanRequest) -> DrillPlan:
        """The marker (the drill's row, committed on the live primary now) and its WAL segment switched
        and archived (the WAL shipment after this step takes it to the store), then the backup to
        restore chosen from the store's manifests."""
        marker: datetime = await self._pool.fetchval(
            """INSERT INTO dr_drills (drill_id, requested_by) VALUES ($1, $2)
               ON CONFLICT (drill_id) DO UPDATE SET drill_id = EXCLUDED.drill_id RETURNING started_at""",
            req.drill_id, req.requested_by,
        )  # fmt: skip
        if await self._pool.fetchval("SELECT current_setting('archive_mode') <> 'off'"):
            segment = await self._pool.fetchval("SELECT pg_walfile_name(pg_current_wal_lsn())")
            await self._pool.execute("SELECT pg_switch_wal()")
            for _ in range(int(ARCHIVED_WITHIN_S / 0.2)):  # the archiver is another process: polled
                archived = "SELECT COALESCE(last_archived_wal, '') >= $1 FROM pg_stat_archiver"
                if await self._pool.fetchval(archived, segment):
                    break
                await asyncio.sleep(0.2)
        try:
            chosen = restore.choose(
                await asyncio.to_thread(restore.manifests, self._store), req.backup_id, req.at
            )
        except restore.NoBackup as exc:
            raise _refuse("NoBackup", str(exc)) from exc
        return DrillPlan(
            drill_id=req.drill_id, backup_id=chosen.backup_id, data_as_of=chosen.data_as_of, at=req.at,
            marker_at=marker, counts=chosen.counts,
        )  # fmt: skip

    @activity.defn(name="dr.drill.restore")
    async def restore_and_check(self, plan: DrillPlan) -> DrillChecks:
        """The chosen backup into a scratch cluster (every object's SHA-256 checked, Postgres's own
        pg_verifybackup, the WAL replayed to the point asked for), then checked; destroyed after."""
        scratch = self._settings.state_dir / "dr" / "drills" / plan.drill_id.replace(":", "")
        await asyncio.to_thread(shutil.rmtree, scratch, True)  # a retry starts clean
        pg = EmbeddedPostgres(pgdata=scratch / "pg", port=free_port(), log_file=scratch / "pg.log")
        checks, progress = DrillChecks(), {"step": "fetching"}
        started = time.monotonic()
        try:
            wal_sha = {r.key: r.sha256 for r in await catalog.wal_objects(self._pool)}
            await beating(lambda: self._restore(plan, scratch, pg, checks, progress, wal_sha), progress)
            checks.restore_s = round(time.monotonic() - started, 3)
            progress["step"] = "checking"
            await beating(self._check(plan, pg, checks), progress)
        finally:
            await asyncio.to_thread(pg.remove)
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        log.info("dr drill checked", workflow_id=plan.drill_id, failures=len(checks.failures),
                 restore_s=checks.restore_s)  # fmt: skip
        return checks

    def _restore(
        self, plan: DrillPlan, scratch: Path, pg: EmbeddedPostgres, checks: DrillChecks,
        progress: dict[str, Any], wal_sha: dict[str, str],
    ) -> None:  # fmt: skip
        store = self._store
        try:
            manifest = restore.manifest(store, plan.backup_id)
        except restore.NoBackup as exc:
            raise _refuse("NoBackup", f"{exc} (it left the store after the drill chose it)") from exc
        fetched = scratch / "fetched"

        def fetched_so_far(key: str, total: int) -> None:
            progress.update(step=f"fetched {key}", bytes=total)
            checks.objects_verified += 1

        try:
            checks.bytes = restore.fetch(
                store, manifest.objects, f"full/{plan.backup_id}/", fetched, fetched_so_far
            )
            checks.wal_files = len(restore.fetch_wal(store, manifest.start_wal, scratch / "wal", wal_sha))
        except restore.ChecksumMismatch as exc:
            raise _refuse("ChecksumMismatch", str(exc)) from exc
        except restore.MissingObject as exc:
            raise _refuse("MissingObject", str(exc)) from exc
        verified = subprocess.run(
            [str(WHEEL_INSTALL / "bin" / "pg_verifybackup"), "-n", str(fetched / "postgres")],
            capture_output=True, text=True, timeout=3600, check=False,
        )  # fmt: skip
        if verified.returncode != 0:
            raise _refuse("ChecksumMismatch", f"pg_verifybackup: {verified.stderr.strip()[-500:]}")
        progress["step"] = "replaying WAL"
        try:
            restore.restore_cluster(pg, fetched / "postgres", scratch / "wal", plan.at)
        except EmbeddedPostgresError as exc:
            raise _refuse("RestoreFailed", str(exc)) from exc

    async def _check(self, plan: DrillPlan, pg: EmbeddedPostgres, checks: DrillChecks) -> None:
        """What came back: how recent it is (the drill's own marker), every table against its rows at
        backup time, the audit hash chain end to end, the golden RAG questions against the live KB's."""
        conn = await asyncpg.connect(pg.dsn("careflow"), timeout=10)
        try:
            checks.restored_to = await conn.fetchval("SELECT pg_last_xact_replay_timestamp()")
            marker = "SELECT 1 FROM dr_drills WHERE drill_id = $1"
            checks.marker_restored = bool(await conn.fetchval(marker, plan.drill_id))
            if checks.marker_restored:
                checks.data_age_s = 0.0
            elif checks.restored_to is not None:  # up to the point asked for, else up to the drill's start
                until = plan.at or plan.marker_at
                checks.data_age_s = round(max((until - checks.restored_to).total_seconds(), 0.0), 3)
            now = await catalog.row_counts(conn)
            for table, at_backup in sorted(plan.counts.items()):
                restored = now.get(table, 0)
                checks.counts.append(TableCount(table=table, at_backup=at_backup, restored=restored))
                shrank = table == "audit_events" and plan.at is None and restored < at_backup  # append-only
                if at_backup and (not restored or shrank):
                    checks.failures.append(
                        f"rows lost: {table} had {at_backup} at backup time, restored {restored}"
                    )
            chain = await trail.verify(conn)
            checks.audit_ok, checks.audit_rows = chain.ok, chain.rows_checked
            if not chain.ok:
                checks.failures.append(f"audit chain broken at row {chain.first_broken_id}: {chain.reason}")
            chunks = now.get("kb_chunks", 0)
        finally:
            await conn.close()
        if chunks:
            await self._golden(pg, checks)

    async def _golden(self, pg: EmbeddedPostgres, checks: DrillChecks) -> None:
        items, embedder = load_golden(), self._embedder()
        scratch = Settings(home=pg.pgdata.parent, database_url=pg.dsn("careflow"), database_pool_min=1,
                           database_pool_max=2)  # fmt: skip
        pool = await create_pool(scratch)
        try:
            restored = await evaluate_retrieval(pool, items, embedder=embedder)
        finally:
            await pool.close()
        live = await evaluate_retrieval(self._pool, items, embedder=embedder)
        checks.golden_questions = restored.questions
        checks.golden_recall, checks.live_recall = round(restored.recall_at_k, 4), round(live.recall_at_k, 4)
        if restored.recall_at_k < live.recall_at_k - GOLDEN_TOLERANCE:
            checks.failures.append(
                f"golden RAG questions: recall@{restored.k} {restored.recall_at_k:.3f} on the restored copy, "
                f"{live.recall_at_k:.3f} live"
            )

    @activity.defn(name="dr.drill.record")
    async def record(self, result: DrillResult) -> list[ObjectiveCheck]:
        """The drill's row (`careflow dr report` reads it), judged against the objectives; operations
        are told of a drill that failed."""
        c, p = result.checks, result.plan
        judged = objectives_met(c) if c is not None and result.outcome == "passed" else []
        await self._pool.execute(
            "INSERT INTO dr_drills (drill_id, requested_by) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            result.drill_id, result.requested_by,
        )  # fmt: skip
        await self._pool.execute(
            """UPDATE dr_drills SET finished_at = now(), outcome = $2, failed_check = $3, reason = $4,
                   backup_id = $5, target_at = $6, restore_s = $7, data_age_s = $8, restored_to = $9,
                   checks = $10::jsonb, objectives = $11::jsonb
               WHERE drill_id = $1""",
            result.drill_id, result.outcome, result.failed_check, result.reason,
            p.backup_id if p else None, p.at if p else None, c.restore_s if c else None,
            c.data_age_s if c else None, c.restored_to if c else None,
            c.model_dump_json() if c else "{}", json.dumps([o.model_dump() for o in judged]),
        )  # fmt: skip
        if result.outcome != "passed":
            await self._notifier.send(
                dedup_key=step_key(result.drill_id, "failed"), kind="dr-drill-failed",
                recipient_id="operations", workflow_id=result.drill_id,
                body={"drill": result.drill_id, "check": result.failed_check, "reason": result.reason},
            )  # fmt: skip
        return judged


def objectives_met(c: DrillChecks) -> list[ObjectiveCheck]:
    """Each database-dependent feature recovered from backups alone: restore time against its RTO, data
    age against its RPO (a feature that may lose nothing is met only when nothing was lost: that is the
    standby's job, and the report says so)."""
    out = []
    for o in OBJECTIVES:
        if "database" not in o.depends_on:
            continue
        age_ok = c.data_age_s is not None and c.data_age_s <= o.rpo.total_seconds()
        out.append(ObjectiveCheck(
            feature=o.feature, restore_s=c.restore_s, objective_rto_s=o.rto.total_seconds(),
            data_age_s=c.data_age_s, objective_rpo_s=o.rpo.total_seconds(),
            met=c.restore_s <= o.rto.total_seconds() and age_ok,
        ))  # fmt: skip
    return out

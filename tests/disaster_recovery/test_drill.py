"""DRDrillWorkflow with its real activities (time-skipping server): the newest backup restored into a
scratch cluster with its WAL, every object checked against its SHA-256, then row counts, the audit hash
chain and the golden RAG questions on the restored copy; a corrupted object fails the drill at that
object; a point in time restores what was committed before it and nothing after."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from careflow.audit.trail import PostgresAuditTrail
from careflow.dr.store import FolderStore
from careflow.kb import ingest
from careflow.kb.evaluation import load_golden
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType, AuditOutcome
from careflow.models.dr_backup import BackupInput, BackupResult
from careflow.models.dr_drill import DrillInput, DrillResult
from careflow.notify.notifier import Notifier
from starters.clients.history import export_history
from tests.support.dr_site import Site, dr_worker
from tests.support.kb import STARTER
from workflows.dr_backup import BackupWorkflow
from workflows.dr_drill import DRDrillWorkflow

pytestmark = pytest.mark.stack  # a Postgres of its own
HISTORIES = Path(__file__).resolve().parents[1] / "histories"
RECORD = os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1"


async def audited(site: Site, n: int, what: str) -> None:
    trail = PostgresAuditTrail(site.pool)
    for i in range(n):
        await trail.append(
            AuditEvent(
                event_type=AuditEventType.SYSTEM_OPERATION, actor="dr-test", actor_type="service",
                action=AuditAction.EXECUTE, outcome=AuditOutcome.SUCCESS, resource_type="Database",
                resource_id=f"{what}-{i}", workflow_id=f"wf-{what}",
            )
        )  # fmt: skip


async def backup(env: WorkflowEnvironment, site: Site, store: FolderStore, task_queue: str) -> BackupResult:
    notifier = Notifier(site.pool, None)
    async with dr_worker(env.client, site, store, notifier, task_queue):
        result: BackupResult = await env.client.execute_workflow(
            BackupWorkflow.run, BackupInput(requested_by="dr-ops", search_attributes=False),
            id=f"dr-backup-full-{uuid.uuid4().hex[:8]}", task_queue=task_queue,
        )  # fmt: skip
    await notifier.aclose()
    assert result.outcome == "complete", result.reason
    return result


async def drill(
    env: WorkflowEnvironment, site: Site, store: FolderStore, task_queue: str, name: str, **inp: object
) -> DrillResult:
    notifier = Notifier(site.pool, None)
    wid = f"dr-drill-{name}-{uuid.uuid4().hex[:8]}"
    async with dr_worker(env.client, site, store, notifier, task_queue):
        result: DrillResult = await env.client.execute_workflow(
            DRDrillWorkflow.run, DrillInput(requested_by="dr-ops", search_attributes=False, **inp),  # type: ignore[arg-type]
            id=wid, task_queue=task_queue,
        )  # fmt: skip
        if RECORD and name in ("passed", "checksum"):
            (await export_history(env.client, wid, HISTORIES)).replace(
                HISTORIES / f"DRDrillWorkflow-{name}.json"
            )
    await notifier.aclose()
    return result


def scratch_gone(site: Site) -> bool:
    drills = site.home / "dr" / "drills"
    return not drills.exists() or not any(drills.iterdir())


async def test_a_drill_restores_the_newest_backup_and_its_wal_then_checks_the_copy(
    time_skipping: WorkflowEnvironment, site: Site, task_queue: str
) -> None:
    names = [s.name for s in ingest.discover(STARTER)]
    await ingest.ingest_files(site.pool, "default", STARTER, names)  # the golden questions' tenant
    await audited(site, 20, "before")
    store = FolderStore(site.tmp / "backups")
    made = await backup(time_skipping, site, store, task_queue)
    await audited(site, 15, "after")  # only in the WAL: the drill must replay it

    r = await drill(time_skipping, site, store, task_queue, "passed")
    assert (r.outcome, r.stage, r.failed_check) == ("passed", "passed", ""), r.reason
    assert r.plan is not None and r.plan.backup_id == made.backup_id
    c = r.checks
    assert c is not None and c.failures == []
    assert c.objects_verified == 6  # Postgres's 3, models, KB sources, Temporal: all in the manifest
    assert c.wal_files >= 1 and c.restore_s > 0 and c.bytes > 0
    assert c.marker_restored and c.data_age_s == 0.0  # everything committed before the drill began
    assert c.audit_ok and c.audit_rows == 35  # the 15 after the backup came back from the WAL
    counts = {x.table: (x.at_backup, x.restored) for x in c.counts}
    assert counts["audit_events"] == (20, 35) and counts["kb_chunks"][0] == counts["kb_chunks"][1] > 0
    assert (
        c.golden_questions == len(load_golden())
        and c.golden_recall == c.live_recall
        and c.golden_recall > 0.5
    )
    assert {o.feature for o in r.objectives} >= {"lab-alerts", "prior-auth", "rag"}
    assert all(o.met for o in r.objectives)  # nothing lost, restored well within every RTO
    assert all(o.restore_s == c.restore_s for o in r.objectives)
    assert scratch_gone(site)

    row = await site.pool.fetchrow(
        "SELECT outcome, backup_id, restore_s FROM dr_drills WHERE drill_id = $1", r.drill_id
    )
    assert (row["outcome"], row["backup_id"]) == ("passed", made.backup_id) and row[
        "restore_s"
    ] == c.restore_s


async def test_a_corrupted_backup_object_fails_the_drill_at_that_object(
    time_skipping: WorkflowEnvironment, site: Site, task_queue: str
) -> None:
    store = FolderStore(site.tmp / "backups")
    made = await backup(time_skipping, site, store, task_queue)
    target = store.root / "full" / made.backup_id / "models.tar.gz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))

    r = await drill(time_skipping, site, store, task_queue, "checksum")
    assert (r.outcome, r.failed_check) == ("failed", "checksum")
    assert f"full/{made.backup_id}/models.tar.gz: SHA-256" in r.reason and r.checks is None
    assert scratch_gone(site)
    told = await site.pool.fetchval(
        "SELECT count(*) FROM notifications WHERE kind = 'dr-drill-failed' AND workflow_id = $1", r.drill_id
    )
    assert told == 1


async def test_a_point_in_time_restores_what_was_committed_before_it_and_nothing_after(
    time_skipping: WorkflowEnvironment, site: Site, task_queue: str
) -> None:
    store = FolderStore(site.tmp / "backups")
    made = await backup(time_skipping, site, store, task_queue)
    await audited(site, 10, "kept")
    point: datetime = await site.pool.fetchval("SELECT clock_timestamp()")
    await audited(site, 10, "after-the-point")

    r = await drill(time_skipping, site, store, task_queue, "pitr", at=point)
    assert r.outcome == "passed", r.reason
    c = r.checks
    assert c is not None and c.restored_to is not None and c.restored_to <= point
    # The data age of a point-in-time restore: what is missing before the point asked for (here, the
    # moment between the last commit before it and the point itself).
    assert not c.marker_restored and c.data_age_s is not None and 0 <= c.data_age_s < 60
    assert c.audit_rows == 10 and c.audit_ok  # the 10 before the point, none after

    assert made.base is not None
    early = await drill(
        time_skipping, site, store, task_queue, "too-early", at=made.base.data_as_of.replace(year=2020)
    )
    assert (early.outcome, early.failed_check) == (
        "failed",
        "plan",
    ) and "no full backup older than" in early.reason


async def test_an_object_gone_from_the_store_fails_the_drill_naming_it(
    time_skipping: WorkflowEnvironment, site: Site, task_queue: str
) -> None:
    store = FolderStore(site.tmp / "backups")
    made = await backup(time_skipping, site, store, task_queue)
    (store.root / "full" / made.backup_id / "temporal.db").unlink()  # a lifecycle rule, an operator

    r = await drill(time_skipping, site, store, task_queue, "missing")
    assert (r.outcome, r.failed_check) == ("failed", "missing-object")
    assert f"full/{made.backup_id}/temporal.db" in r.reason and scratch_gone(site)

"""BackupWorkflow with its real activities (time-skipping server) against a real embedded Postgres that
archives its WAL, into a real folder store: a full backup stores every part with its SHA-256 and a
manifest Postgres's own pg_verifybackup accepts; a store without room fails only the new backup;
retention keeps the newest backups and the WAL they need, in the store and in the archive folder."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.dr_backup import BackupActivities
from careflow.db.embedded import WHEEL_INSTALL
from careflow.dr import backup, catalog, restore
from careflow.dr.store import FolderStore, sha256_file
from careflow.models.dr_backup import NIGHTLY_SCHEDULE_ID, BackupInput, BackupRef, BackupResult, FinishRequest
from careflow.notify.notifier import Notifier
from starters.clients import dr_backup as backups_of
from starters.clients.history import export_history
from tests.support.dr_site import Site, dr_worker, new_segment
from tests.support.wait import wait_until
from workflows.dr_backup import BackupWorkflow

pytestmark = pytest.mark.stack  # a Postgres of its own
HISTORIES = Path(__file__).resolve().parents[1] / "histories"
RECORD = os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1"


async def run_backup(
    env: WorkflowEnvironment, site: Site, store: FolderStore, task_queue: str, name: str, **inp: object
) -> BackupResult:
    notifier = Notifier(site.pool, None)
    async with dr_worker(env.client, site, store, notifier, task_queue):
        wid = f"dr-backup-{name}-{uuid.uuid4().hex[:8]}"
        handle = await env.client.start_workflow(
            BackupWorkflow.run, BackupInput(requested_by="dr-ops", search_attributes=False, **inp),  # type: ignore[arg-type]
            id=wid, task_queue=task_queue,
        )  # fmt: skip
        result: BackupResult = await handle.result()
        if RECORD and name in ("full", "store-full", "wal"):
            (await export_history(env.client, wid, HISTORIES)).replace(
                HISTORIES / f"BackupWorkflow-{name}.json"
            )
    await notifier.aclose()
    return result


def _names(tar_gz: Path) -> list[str]:
    with tarfile.open(tar_gz) as tar:
        return tar.getnames()


async def test_a_full_backup_stores_every_part_with_its_checksum_and_a_verifiable_manifest(
    time_skipping: WorkflowEnvironment, site: Site, task_queue: str
) -> None:
    archived = await new_segment(site)
    store = FolderStore(site.tmp / "backups")
    r = await run_backup(time_skipping, site, store, task_queue, "full")
    assert r.outcome == "complete" and r.stage == "complete" and r.base is not None, r.reason
    assert r.store == store.where and r.skipped == []

    refs = await catalog.objects(site.pool, r.backup_id)
    assert {x.kind for x in refs} - {"wal"} == {"base", "models", "kb-sources", "temporal", "manifest"}
    # WAL archived before the only backup was shipped, then deleted by retention: no backup needs it.
    assert f"wal/{archived}.gz" not in store.keys() and not (site.pg.wal_archive_dir / archived).exists()
    assert r.pruned is not None and r.pruned.wal_local >= 1 and r.pruned.backups == []
    for x in refs:  # what the catalog says is what the store holds
        assert sha256_file(store.root / x.key) == (x.sha256, x.bytes), x.key
    assert r.objects == len(refs) + r.pruned.objects and r.bytes > sum(x.bytes for x in refs)

    base = store.root / "full" / r.backup_id
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["base"]["start_wal"] == r.base.start_wal
    assert {o["key"]: o["sha256"] for o in manifest["objects"]} == {
        x.key: x.sha256 for x in refs if x.kind not in ("manifest", "wal")
    }
    # Postgres's own check of the base backup against its manifest (every file's checksum).
    verified = subprocess.run(
        [str(WHEEL_INSTALL / "bin" / "pg_verifybackup"), "-n", str(base / "postgres")],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0 and "successfully verified" in verified.stdout, verified.stderr
    assert {"PG_VERSION", "backup_label"} <= set(_names(base / "postgres" / "base.tar.gz"))
    assert r.base.start_wal in _names(base / "postgres" / "pg_wal.tar.gz")  # consistent on its own
    assert "mlflow/1/artifacts/model.txt" in _names(base / "models.tar.gz")
    assert "source-0-guidelines/sepsis.md" in _names(base / "kb-sources.tar.gz")
    with sqlite3.connect(base / "temporal.db") as copy:
        assert copy.execute("SELECT count(*) FROM executions").fetchone() == (500,)

    row = (await catalog.recent(site.pool))[0]
    assert (row["backup_id"], row["status"], row["kind"]) == (r.backup_id, "complete", "full")
    assert row["data_as_of"] == r.base.data_as_of and row["bytes"] == r.bytes and row["objects"] == len(refs)


async def test_a_store_without_room_fails_the_new_backup_alone_and_tells_operations(
    time_skipping: WorkflowEnvironment, site: Site, task_queue: str
) -> None:
    mount = site.tmp / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        store = FolderStore(mount)
        first = await run_backup(time_skipping, site, store, task_queue, "first")
        assert first.outcome == "complete", first.reason
        before = {k: sha256_file(mount / k) for k in store.keys()}
        used = sum(size for _, size in before.values())
        # The disk now has room for the WAL and little else: the next base backup cannot fit.
        subprocess.run(["mount", "-o", f"remount,size={used + 200_000}", str(mount)], check=True)
        await new_segment(site)

        second = await run_backup(time_skipping, site, store, task_queue, "store-full")
        assert second.outcome == "failed" and second.stage == "failed"
        assert second.reason.startswith("base-backup: backup store") and "is full writing" in second.reason
        after = {k: sha256_file(mount / k) for k in store.keys()}
        assert {k: v for k, v in after.items() if k in before} == before  # the earlier backup, intact
        assert not [k for k in after if k.startswith(f"full/{second.backup_id}/")]  # nothing of the new one
        assert not [p for p in mount.rglob(".*") if p.is_file()]  # no partial object
        assert [x.kind for x in await catalog.objects(site.pool, second.backup_id)] in ([], ["wal"])
        status, error = await site.pool.fetchrow(
            "SELECT status, error FROM dr_backups WHERE backup_id = $1", second.backup_id
        )
        assert status == "failed" and "is full" in error
        told = await site.pool.fetchval(
            "SELECT count(*) FROM notifications WHERE kind = 'dr-backup-failed' AND workflow_id = $1",
            second.backup_id,
        )
        assert told == 1
    finally:
        subprocess.run(["umount", str(mount)], check=True)


async def test_retention_keeps_the_newest_backups_and_the_wal_they_need(
    time_skipping: WorkflowEnvironment, site: Site, task_queue: str
) -> None:
    store = FolderStore(site.tmp / "backups")
    runs = []
    for i in range(3):
        await new_segment(site)
        runs.append(await run_backup(time_skipping, site, store, task_queue, f"keep-{i}", keep=2))
        assert runs[-1].outcome == "complete", runs[-1].reason
    first, second, third = runs
    assert (
        third.pruned is not None and third.pruned.backups == [first.backup_id] and third.pruned.refused == 0
    )
    assert not store.keys(f"full/{first.backup_id}/")
    assert store.keys(f"full/{second.backup_id}/") and store.keys(f"full/{third.backup_id}/")
    statuses = dict(await site.pool.fetch("SELECT backup_id, status FROM dr_backups"))
    assert [statuses[r.backup_id] for r in runs] == ["expired", "complete", "complete"]
    assert [x.kind for x in await catalog.objects(site.pool, first.backup_id)] in ([], ["wal"]) or all(
        x.kind == "wal" for x in await catalog.objects(site.pool, first.backup_id)
    )

    assert second.base is not None
    oldest_needed = second.base.start_wal[8:]
    wal = [k.removeprefix("wal/").removesuffix(".gz") for k in store.keys("wal/")]
    assert wal and all(n[8:24] >= oldest_needed for n in wal if not n.endswith(".history"))
    local = [p.name for p in site.pg.wal_archive_dir.iterdir() if len(p.name) == 24]
    assert local and all(n[8:] >= oldest_needed for n in local)
    assert third.pruned.objects > 0 and third.pruned.wal_local > 0

    # A WAL shipment between full backups stores only what was archived since.
    newest = await new_segment(site)
    shipped = await run_backup(time_skipping, site, store, task_queue, "wal", kind="wal")
    kinds = [x.kind for x in await catalog.objects(site.pool, shipped.backup_id)]
    assert shipped.outcome == "complete" and shipped.base is None and set(kinds) == {"wal"}
    assert f"wal/{newest}.gz" in store.keys("wal/")
    with gzip.open(store.root / f"wal/{newest}.gz") as packed:  # the segment whole, compressed
        assert len(packed.read()) == 16 * 1024 * 1024


async def test_the_nightly_schedule_starts_a_full_backup(client: Client, site: Site, task_queue: str) -> None:
    """On the dev server (Schedules and search attributes are real there): the Schedule `dev up` creates,
    triggered now, runs a full backup to completion."""
    handle = await client.create_schedule(
        f"test-{NIGHTLY_SCHEDULE_ID}-{uuid.uuid4().hex[:8]}",
        backups_of.schedules(task_queue)[NIGHTLY_SCHEDULE_ID],
    )
    notifier = Notifier(site.pool, None)
    try:
        async with dr_worker(client, site, FolderStore(site.tmp / "backups"), notifier, task_queue):
            await handle.trigger()

            async def started() -> str | None:
                actions = (await handle.describe()).info.recent_actions
                return actions[-1].action.workflow_id if actions else None  # type: ignore[attr-defined]

            wid = await wait_until(started, timeout=30, what="the Schedule's first run")
            result = await client.get_workflow_handle_for(BackupWorkflow.run, wid).result()
        assert wid.startswith("dr-backup-full-") and result.outcome == "complete", result.reason
        by = await site.pool.fetchval("SELECT requested_by FROM dr_backups WHERE backup_id = $1", wid)
        assert by == "schedule"
    finally:
        await handle.delete()
        await notifier.aclose()


async def test_retried_steps_leave_one_catalogued_version_of_each_object_and_a_fetchable_manifest(
    site: Site,
) -> None:
    """A worker lost mid-step runs the step again: new bytes under the same keys (a new base backup, new
    tar headers), and the catalog and manifest must name only what the store holds."""
    store, notifier = FolderStore(site.tmp / "backups"), Notifier(site.pool, None)
    acts = BackupActivities(
        site.settings, site.pool, notifier, store=store, archive_dir=site.pg.wal_archive_dir
    )
    env = ActivityEnvironment()
    ref = BackupRef(backup_id=f"dr-backup-retried-{uuid.uuid4().hex[:6]}", kind="full", requested_by="dr-ops")
    await env.run(acts.begin, ref)
    await env.run(acts.base, ref.backup_id)
    base = await env.run(acts.base, ref.backup_id)  # again: another pg_basebackup, other bytes
    await env.run(acts.files, ref.backup_id)
    await env.run(acts.files, ref.backup_id)
    await env.run(acts.finish, FinishRequest(ref=ref, base=base))
    await env.run(acts.finish, FinishRequest(ref=ref, base=base))
    refs = await catalog.objects(site.pool, ref.backup_id)
    keys = [r.key for r in refs]
    assert len(keys) == len(set(keys)) == 7  # 3 of Postgres, models, KB sources, Temporal, the manifest
    manifest = restore.Manifest.parse((store.root / "full" / ref.backup_id / "manifest.json").read_bytes())
    assert len(manifest.objects) == 6 and all(o["kind"] != "manifest" for o in manifest.objects)
    fetched = restore.fetch(store, manifest.objects, f"full/{ref.backup_id}/", site.tmp / "fetched")
    assert fetched == sum(int(str(o["bytes"])) for o in manifest.objects)  # every SHA-256 holds
    await notifier.aclose()


def test_a_wal_segment_packs_to_the_same_bytes_whoever_ships_it_and_a_rebuilt_site_hands_its_archive_over(
    tmp_path: Path,
) -> None:
    segment = tmp_path / "000000010000000000000007"
    segment.write_bytes(os.urandom(4096) + bytes(16 * 1024 * 1024 - 4096))
    backup.gzip_file(segment, tmp_path / "a.gz")
    backup.gzip_file(segment, tmp_path / "b.gz")  # another shipment, another second
    assert sha256_file(tmp_path / "a.gz") == sha256_file(tmp_path / "b.gz")

    old, new = tmp_path / "old-archive", tmp_path / "new-archive"
    old.mkdir()
    new.mkdir()
    for name in ("000000010000000000000008", "000000010000000000000009", "00000002.history"):
        (old / name).write_text(name)
    (new / "00000002.history").write_text("the new primary's own")
    assert backup.adopt_archive(old, new) == 2
    assert sorted(p.name for p in new.iterdir()) == [
        "000000010000000000000008", "000000010000000000000009", "00000002.history",
    ]  # fmt: skip
    assert (new / "00000002.history").read_text() == "the new primary's own"

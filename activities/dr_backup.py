"""Activities of `BackupWorkflow` (seed P20): catalogue the run, take the base backup, ship the archived
WAL, copy model artifacts, knowledge-base sources and the Temporal dev server's database, write the
manifest, and apply retention.  Thin: the work is careflow/dr/backup.py's, the store careflow/dr/store.py's,
the catalog careflow/dr/catalog.py's.

Idempotent: a retried step starts from a clean staging folder and stores the same keys again (the
catalog upserts by key and version).  A store without room raises `BackupStoreFull` (not retried): the
workflow fails the run, whose own objects are deleted; every earlier backup is untouched.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import beating
from careflow.config import Settings
from careflow.db import endpoint
from careflow.dr import backup, catalog, sites
from careflow.dr.store import BackupStore, StoreFull, open_store
from careflow.idempotency import step_key
from careflow.models.dr_backup import (
    BackupRef,
    BaseInfo,
    FailRequest,
    FinishRequest,
    Pruned,
    Stored,
    StoredRef,
)
from careflow.notify.notifier import Notifier
from careflow.security.logging import get_logger

log = get_logger("careflow.dr.backup")
STORE_FULL = "BackupStoreFull"


class BackupActivities:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, notifier: Notifier,
        store: BackupStore | None = None, archive_dir: Path | None = None,
    ) -> None:  # fmt: skip
        self._settings, self._pool, self._notifier = settings, pool, notifier
        self._store_given, self._archive_given = store, archive_dir

    def all(self) -> list[Callable[..., Any]]:
        return [self.begin, self.base, self.wal, self.files, self.finish, self.fail, self.prune]

    @property
    def _store(self) -> BackupStore:
        return self._store_given or open_store(self._settings)

    def _archive(self) -> Path:
        """The active primary's WAL archive folder (embedded: the cluster's own)."""
        if self._archive_given is not None:
            return self._archive_given
        return sites.cluster(self._settings, endpoint.active_url(self._settings)).wal_archive_dir

    def _staging(self, backup_id: str) -> Path:
        return self._settings.state_dir / "dr" / "staging" / backup_id.replace("/", "_").replace(":", "")

    async def _put(self, store: BackupStore, backup_id: str, kind: str, key: str, source: Path,
                   progress: dict[str, Any]) -> StoredRef:  # fmt: skip
        progress["storing"] = key
        try:
            obj = await beating(lambda: store.put(key, source), progress)
        except StoreFull as exc:
            raise ApplicationError(str(exc), type=STORE_FULL, non_retryable=True) from exc
        ref = await catalog.add(self._pool, backup_id, kind, obj)
        progress["stored_bytes"] = progress.get("stored_bytes", 0) + obj.size
        return ref

    @activity.defn(name="dr.backup.begin")
    async def begin(self, ref: BackupRef) -> str:
        """The run in the catalog; returns where the store is (never a credential)."""
        store = self._store
        await catalog.begin(self._pool, ref, store.where)
        return store.where

    @activity.defn(name="dr.backup.base")
    async def base(self, backup_id: str) -> BaseInfo:
        """A base backup of the whole active primary cluster, stored object by object."""
        staging = self._staging(backup_id) / "base"
        shutil.rmtree(staging, ignore_errors=True)  # a retry starts clean
        staging.parent.mkdir(parents=True, exist_ok=True)
        url, progress = endpoint.active_url(self._settings), {"step": "pg_basebackup"}
        try:
            taken = await beating(lambda: backup.take_base_backup(url, staging, backup_id), progress)
        except StoreFull as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ApplicationError(str(exc), type=STORE_FULL, non_retryable=True) from exc
        as_of = datetime.now(UTC)
        counts = await catalog.row_counts(self._pool)
        store, total = self._store, 0
        for path in taken.files:
            ref = await self._put(
                store, backup_id, "base", f"full/{backup_id}/postgres/{path.name}", path, progress
            )
            total += ref.bytes
        shutil.rmtree(staging, ignore_errors=True)
        log.info("base backup stored", workflow_id=backup_id, objects=len(taken.files), bytes=total)
        return BaseInfo(
            start_wal=taken.start_wal, stop_lsn=taken.stop_lsn, timeline=taken.timeline, data_as_of=as_of,
            objects=len(taken.files), bytes=total, counts=counts,
        )  # fmt: skip

    @activity.defn(name="dr.backup.wal")
    async def wal(self, backup_id: str) -> Stored:
        """Every archived WAL file not in the store yet (point-in-time recovery up to the newest)."""
        archive = self._archive()
        if not archive.exists():
            why = "a database careflow does not run archives its WAL its own way (pgBackRest, WAL-G, ...)"
            return Stored(skipped=[f"wal: no archive folder at {archive}: {why}"])
        done, store, progress = await catalog.stored_wal(self._pool), self._store, {"step": "wal"}
        staging, shipped = self._staging(backup_id) / "wal", Stored()
        staging.mkdir(parents=True, exist_ok=True)
        for path in backup.archived(archive):
            key = backup.wal_key(path.name)
            if key in done:
                continue
            packed = staging / f"{path.name}.gz"
            try:
                await beating(functools.partial(backup.gzip_file, path, packed), progress)
            except StoreFull as exc:
                raise ApplicationError(str(exc), type=STORE_FULL, non_retryable=True) from exc
            ref = await self._put(store, backup_id, "wal", key, packed, progress)
            packed.unlink()
            shipped.objects, shipped.bytes = shipped.objects + 1, shipped.bytes + ref.bytes
        shutil.rmtree(staging, ignore_errors=True)
        return shipped

    @activity.defn(name="dr.backup.files")
    async def files(self, backup_id: str) -> Stored:
        """Model artifacts, the knowledge base's source folders, the Temporal dev server's database."""
        staging = self._staging(backup_id) / "files"
        rows = await self._pool.fetch(
            "SELECT DISTINCT source_root FROM kb_documents WHERE source_root IS NOT NULL ORDER BY 1"
        )
        home, roots, progress = (
            self._settings.state_dir,
            [r["source_root"] for r in rows],
            {"step": "copying"},
        )
        try:
            copies = await beating(lambda: backup.copy_files(home, roots, staging), progress)
        except StoreFull as exc:
            raise ApplicationError(str(exc), type=STORE_FULL, non_retryable=True) from exc
        store, out = self._store, Stored(skipped=copies.skipped)
        for kind, path in copies.made:
            ref = await self._put(store, backup_id, kind, f"full/{backup_id}/{path.name}", path, progress)
            out.objects, out.bytes = out.objects + 1, out.bytes + ref.bytes
        shutil.rmtree(staging, ignore_errors=True)
        return out

    @activity.defn(name="dr.backup.finish")
    async def finish(self, req: FinishRequest) -> Stored:
        """A full backup's manifest (its objects with their SHA-256, and the first WAL segment it needs:
        a restore needs no catalog), then the run complete in the catalog."""
        backup_id, store = req.ref.backup_id, self._store
        refs = [r for r in await catalog.objects(self._pool, backup_id) if r.kind not in ("wal", "manifest")]
        if req.ref.kind == "full":
            path = self._staging(backup_id) / "manifest.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(manifest(backup_id, store.where, req.base, refs))
            refs.append(
                await self._put(store, backup_id, "manifest", f"full/{backup_id}/manifest.json", path, {})
            )
        base = req.base
        refs = await catalog.objects(self._pool, backup_id)
        total = await catalog.complete(
            self._pool, backup_id, start_wal=base.start_wal if base else None,
            stop_lsn=base.stop_lsn if base else None, data_as_of=base.data_as_of if base else None,
        )  # fmt: skip
        shutil.rmtree(self._staging(backup_id), ignore_errors=True)
        return Stored(objects=len(refs), bytes=total)

    @activity.defn(name="dr.backup.fail")
    async def fail(self, req: FailRequest) -> None:
        """The run failed: its own objects leave the store (WAL it shipped stays: it is valid and a
        later restore needs it), the catalog says why, operations are told."""
        mine = [r for r in await catalog.objects(self._pool, req.backup_id) if r.kind != "wal"]
        mine.sort(key=lambda r: r.kind != "manifest")
        refused = Pruned()  # an object the store will not delete yet (Object Lock) stays catalogued
        await catalog.forget(self._pool, self._delete(self._store, mine, refused))
        await catalog.fail(self._pool, req.backup_id, req.error)
        shutil.rmtree(self._staging(req.backup_id), ignore_errors=True)
        log.warning("backup failed", workflow_id=req.backup_id, removed=len(mine))
        await self._notifier.send(
            dedup_key=step_key(req.backup_id, "failed"), kind="dr-backup-failed", recipient_id="operations",
            workflow_id=req.backup_id, body={"backup": req.backup_id, "error": req.error},
        )  # fmt: skip

    @activity.defn(name="dr.backup.prune")
    async def prune(self, keep: int) -> Pruned:
        """Retention: the newest `keep` complete full backups (0: the setting) stay; older ones' objects
        are deleted, then the WAL no kept backup needs, in the store and (once stored) in the archive
        folder.  A deletion the store refuses (Object Lock) is counted and the object kept."""
        keep = keep or self._settings.backup_retention
        kept, old = backup.expired(await catalog.complete_full(self._pool), keep)
        out, store = Pruned(), self._store
        for b in old:
            objects = [r for r in await catalog.objects(self._pool, b.backup_id) if r.kind != "wal"]
            objects.sort(key=lambda r: r.kind != "manifest")  # the manifest first: no restore picks it now
            gone = self._delete(store, objects, out)
            await catalog.forget(self._pool, gone)
            if len(gone) == len(objects):  # else it stays complete: retention tries again next time
                out.backups.append(b.backup_id)
        await catalog.expire(self._pool, out.backups)
        if not kept:
            return out
        oldest = min((b.start_wal for b in kept), key=lambda name: name[8:])  # any timeline: its segment
        stored = await catalog.wal_objects(self._pool)
        drop = set(backup.removable_wal([backup.wal_of_key(r.key) for r in stored], oldest))
        gone = self._delete(store, [r for r in stored if backup.wal_of_key(r.key) in drop], out)
        await catalog.forget(self._pool, gone)
        for path in backup.archived(self._archive()):
            if path.name in drop:  # removable, and shipped: in the store
                path.unlink(missing_ok=True)
                out.wal_local += 1
        log.info("backup retention", kept=len(kept), expired=len(out.backups), objects=out.objects)
        return out

    @staticmethod
    def _delete(store: BackupStore, refs: list[StoredRef], out: Pruned) -> list[StoredRef]:
        gone = []
        for r in refs:
            try:
                store.delete(r.key, r.version)
            except Exception as exc:  # an Object Lock refusal keeps the object, and says so
                log.warning(
                    "backup object kept: the store refused its deletion", key=r.key, error=type(exc).__name__
                )
                out.refused += 1
                continue
            gone.append(r)
            out.objects += 1
        return gone


def manifest(backup_id: str, store: str, base: BaseInfo | None, refs: list[StoredRef]) -> bytes:
    return json.dumps(
        {
            "backup_id": backup_id,
            "store": store,
            "base": base.model_dump(mode="json") if base else None,
            "objects": [r.model_dump() for r in refs],
        },
        indent=2,
    ).encode()

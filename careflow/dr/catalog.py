"""The backup catalog (migration 0021): each backup run and every object it stored, with its SHA-256.
The store holds a manifest per full backup too, so a restore needs no catalog (its database may be the
thing that was lost)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from careflow.dr.backup import Kept
from careflow.dr.store import StoredObject
from careflow.models.dr_backup import BackupRef, StoredRef


async def begin(pool: asyncpg.Pool, ref: BackupRef, store: str) -> None:
    await pool.execute(
        """INSERT INTO dr_backups (backup_id, kind, requested_by, store) VALUES ($1, $2, $3, $4)
           ON CONFLICT (backup_id) DO NOTHING""",
        ref.backup_id, ref.kind, ref.requested_by, store,
    )  # fmt: skip


async def add(pool: asyncpg.Pool, backup_id: str, kind: str, obj: StoredObject) -> StoredRef:
    """The object stored for this backup; a retried step's earlier version of the same key (other bytes:
    a new base backup, another tar header) leaves the catalog, the store having replaced it."""
    if kind != "wal":  # a WAL segment's bytes never change: no earlier version to drop
        await pool.execute(
            "DELETE FROM dr_backup_objects WHERE backup_id = $1 AND key = $2 AND version <> $3",
            backup_id, obj.key, obj.version,
        )  # fmt: skip
    await pool.execute(
        """INSERT INTO dr_backup_objects (key, version, backup_id, kind, sha256, bytes)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (key, version) DO UPDATE SET sha256 = EXCLUDED.sha256, bytes = EXCLUDED.bytes""",
        obj.key, obj.version, backup_id, kind, obj.sha256, obj.size,
    )  # fmt: skip
    return StoredRef(kind=kind, key=obj.key, version=obj.version, sha256=obj.sha256, bytes=obj.size)


async def objects(pool: asyncpg.Pool, backup_id: str) -> list[StoredRef]:
    rows = await pool.fetch(
        "SELECT kind, key, version, sha256, bytes FROM dr_backup_objects WHERE backup_id = $1 ORDER BY key",
        backup_id,
    )
    return [StoredRef(**dict(r)) for r in rows]


async def stored_wal(pool: asyncpg.Pool) -> set[str]:
    """Keys of the WAL files already in the store (careflow/dr/backup.py `wal_key`)."""
    return {r["key"] for r in await pool.fetch("SELECT key FROM dr_backup_objects WHERE kind = 'wal'")}


async def complete(
    pool: asyncpg.Pool, backup_id: str, *, start_wal: str | None, stop_lsn: str | None,
    data_as_of: datetime | None,
) -> int:  # fmt: skip
    """The run is complete; returns the bytes it stored."""
    total: int = await pool.fetchval(
        """UPDATE dr_backups SET status = 'complete', finished_at = now(), start_wal = $2, stop_lsn = $3,
               data_as_of = $4, error = NULL,
               bytes = (SELECT COALESCE(sum(bytes), 0) FROM dr_backup_objects WHERE backup_id = $1)
           WHERE backup_id = $1 RETURNING bytes""",
        backup_id, start_wal, stop_lsn, data_as_of,
    )  # fmt: skip
    return total


async def fail(pool: asyncpg.Pool, backup_id: str, error: str) -> None:
    await pool.execute(
        "UPDATE dr_backups SET status = 'failed', finished_at = now(), error = $2 WHERE backup_id = $1",
        backup_id, error[:2000],
    )  # fmt: skip


async def complete_full(pool: asyncpg.Pool) -> list[Kept]:
    rows = await pool.fetch(
        """SELECT backup_id, finished_at, start_wal FROM dr_backups
           WHERE kind = 'full' AND status = 'complete' ORDER BY finished_at DESC"""
    )
    return [Kept(r["backup_id"], r["finished_at"], r["start_wal"]) for r in rows]


async def forget(pool: asyncpg.Pool, refs: list[StoredRef]) -> None:
    """Objects deleted from the store leave the catalog."""
    await pool.execute(
        """DELETE FROM dr_backup_objects
           WHERE (key, version) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
        [r.key for r in refs], [r.version for r in refs],
    )  # fmt: skip


async def wal_objects(pool: asyncpg.Pool) -> list[StoredRef]:
    rows = await pool.fetch(
        "SELECT kind, key, version, sha256, bytes FROM dr_backup_objects WHERE kind = 'wal' ORDER BY key"
    )
    return [StoredRef(**dict(r)) for r in rows]


async def expire(pool: asyncpg.Pool, backup_ids: list[str]) -> None:
    await pool.execute(
        "UPDATE dr_backups SET status = 'expired' WHERE backup_id = ANY($1::text[])", backup_ids
    )


async def row_counts(db: asyncpg.Pool | asyncpg.Connection) -> dict[str, int]:
    """Rows in each of careflow's tables, on one connection (a restore is checked against them)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await row_counts(conn)
    tables = [r["tablename"] for r in await db.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]  # fmt: skip
    return {t: int(await db.fetchval(f'SELECT count(*) FROM "{t}"')) for t in tables}  # noqa: S608 - pg_tables names


async def recent(pool: asyncpg.Pool, limit: int = 20) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            """SELECT b.backup_id, b.kind, b.status, b.requested_by, b.store, b.started_at, b.finished_at,
                      b.data_as_of, b.bytes, b.error,
                      (SELECT count(*) FROM dr_backup_objects o WHERE o.backup_id = b.backup_id) AS objects
               FROM dr_backups b ORDER BY b.started_at DESC LIMIT $1""",
            limit,
        )
    )

"""A hot standby of the embedded Postgres (seed P20): the "DR site" is a second cluster on its own port
and data folder, a streaming replica of the primary made by `pg_basebackup`, fed through a physical
replication slot (the primary keeps every WAL segment the standby has not received yet), synchronous
(a commit waits for the standby: RPO 0) or asynchronous (a commit does not wait: RPO is the lag) by
setting.  The primary also archives every finished WAL segment (`archive_command`), so a base backup
plus the archive restores to any point in time.

A primary that lost its role is fenced (careflow/db/embedded.py `fence`): it is stopped and refuses to
start again, so two primaries can never take writes at once.  In production the same operations are
Patroni's or the managed database's (promote, fence) behind the DR workflow's activities.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass

import asyncpg

from careflow.db.embedded import EmbeddedPostgres

SLOT = "careflow_standby"  # the primary's replication slot, and the standby's application_name


def archive_options(pg: EmbeddedPostgres) -> dict[str, str]:
    """Server settings of a primary whose finished WAL segments are copied to its archive: written whole
    (a copy, then a rename), never overwritten (a segment archived before counts as done when identical,
    and fails loudly when not)."""
    d = shlex.quote(str(pg.wal_archive_dir))
    return {
        "archive_mode": "on",
        "archive_command": f"if [ -f {d}/%f ]; then cmp -s %p {d}/%f; "
        f"else cp %p {d}/%f.part && mv {d}/%f.part {d}/%f; fi",
        "wal_keep_size": "256MB",
        "archive_timeout": "15min",  # an idle-ish server still archives (and ships) its WAL this often
    }


@dataclass(frozen=True)
class Replica:
    """One standby as the primary sees it (`pg_stat_replication`)."""

    name: str
    state: str  # streaming, catchup, startup, backup
    sync: str  # sync, async, potential, quorum
    lag_bytes: int  # WAL written on the primary and not yet replayed on the standby
    replay_lag_s: float | None  # how long the last replayed commit took to reach it (None: idle)


async def replicas(primary_dsn: str) -> list[Replica]:
    conn = await asyncpg.connect(primary_dsn, timeout=5)
    try:
        rows = await conn.fetch(
            """SELECT application_name, state, sync_state,
                      COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint AS lag,
                      EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag
               FROM pg_stat_replication ORDER BY application_name"""
        )
    finally:
        await conn.close()
    return [
        Replica(r["application_name"], r["state"], r["sync_state"], r["lag"], r["replay_lag"]) for r in rows
    ]


async def _ensure_slot(primary_dsn: str) -> None:
    conn = await asyncpg.connect(primary_dsn, timeout=5)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", SLOT):
            await conn.execute("SELECT pg_create_physical_replication_slot($1, true)", SLOT)
    finally:
        await conn.close()


async def set_synchronous(primary_dsn: str, synchronous: bool) -> None:
    """Synchronous: a commit on the primary returns once the standby has it (RPO 0; a standby that is
    down then blocks commits).  Asynchronous: commits never wait."""
    conn = await asyncpg.connect(primary_dsn, timeout=5)
    try:
        names = SLOT if synchronous else ""
        await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def make_standby(primary: EmbeddedPostgres, standby: EmbeddedPostgres, synchronous: bool) -> None:
    """Clone the primary into the (empty) standby folder, start it streaming, and set the commit mode
    once it is connected (so a synchronous primary never waits on a standby that is not there)."""
    await _ensure_slot(primary.dsn("postgres"))
    await asyncio.to_thread(standby.clone_from, primary.port, SLOT, SLOT)
    await asyncio.to_thread(standby.start)
    await streaming(primary.dsn("postgres"))
    await set_synchronous(primary.dsn("postgres"), synchronous)


async def streaming(primary_dsn: str, timeout: float = 60) -> Replica:
    """The standby once it streams from the primary (a synchronous primary must not wait on it before)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [r for r in await replicas(primary_dsn) if r.name == SLOT and r.state == "streaming"]
        if found:
            return found[0]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"the standby did not start streaming within {timeout:.0f} s (see its log)")
        await asyncio.sleep(0.2)

"""The hot standby, real: two embedded clusters, the second a streaming replica of the first made by
pg_basebackup through a replication slot; synchronous commits, WAL archiving, and a failover that
fences the old primary and promotes the standby with nothing committed lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from careflow.config import Settings
from careflow.db import endpoint, replication
from careflow.db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from careflow.db.pool import create_pool
from careflow.dr import sites
from careflow.net import free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.stack  # starts servers of its own


@pytest_asyncio.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedPostgres, EmbeddedPostgres]]:
    primary = EmbeddedPostgres(
        pgdata=tmp_path / "primary", port=free_port(), log_file=tmp_path / "primary.log"
    )
    primary.options = replication.archive_options(primary)
    standby = EmbeddedPostgres(
        pgdata=tmp_path / "standby", port=free_port(), log_file=tmp_path / "standby.log"
    )
    try:
        await asyncio.to_thread(primary.start)
        yield primary, standby
    finally:
        await asyncio.to_thread(standby.remove)
        await asyncio.to_thread(primary.remove)


async def _rows(dsn: str) -> int | None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM orders"))
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


async def test_a_synchronous_standby_has_every_commit_and_takes_over_from_a_fenced_primary(
    pair: tuple[EmbeddedPostgres, EmbeddedPostgres], tmp_path: Path
) -> None:
    primary, standby = pair
    p_dsn, s_dsn = primary.dsn("postgres"), standby.dsn("postgres")
    conn = await asyncpg.connect(p_dsn)
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # careflow's pool registers its codec
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
    await conn.executemany("INSERT INTO orders (item) VALUES ($1)", [(f"item-{i}",) for i in range(100)])

    await replication.make_standby(primary, standby, synchronous=True)
    [replica] = await replication.replicas(p_dsn)
    assert (replica.name, replica.state, replica.sync) == (replication.SLOT, "streaming", "sync")
    assert (await sites.probe(s_dsn)).in_recovery and (await sites.probe(p_dsn)).in_recovery is False
    assert await _rows(s_dsn) == 100  # the base backup

    # Synchronous: a commit returns once the standby has it, so it is there without waiting.
    await conn.executemany("INSERT INTO orders (item) VALUES ($1)", [(f"late-{i}",) for i in range(50)])
    await wait_until(lambda: _at_least(s_dsn, 150), timeout=10, what="the standby replayed the commits")
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        standby_conn = await asyncpg.connect(s_dsn)
        try:
            await standby_conn.execute("INSERT INTO orders (item) VALUES ('x')")
        finally:
            await standby_conn.close()

    # Every finished WAL segment reaches the archive (point-in-time recovery's other half).
    segment = await conn.fetchval("SELECT pg_walfile_name(pg_current_wal_lsn())")
    await conn.execute("SELECT pg_switch_wal()")
    await wait_until(
        lambda: _archived(primary.wal_archive_dir, segment),
        timeout=30,
        what=f"WAL segment {segment} archived",
    )
    await conn.close()

    # A careflow process's pool, open before the failover, on the primary.
    settings = Settings(home=tmp_path / "home", database_url=p_dsn)
    pool = await create_pool(settings)
    assert await pool.fetchval("SELECT current_setting('port')::int") == primary.port

    # Failover: the old primary fenced (stopped, and it refuses to start again), the standby promoted.
    await asyncio.to_thread(primary.fence, "incident test-1")
    assert not primary.is_running()
    with pytest.raises(EmbeddedPostgresError, match="fenced by a failover"):
        await asyncio.to_thread(primary.start)
    await asyncio.to_thread(standby.promote)
    await replication.set_synchronous(s_dsn, False)  # no standby of its own yet: commits must not wait
    assert (await sites.probe(s_dsn)).in_recovery is False
    endpoint.switch(settings, s_dsn, "incident test-1")

    # The same pool, no restart: its broken connections are replaced by ones to the new primary.
    async def on_new_primary() -> int | None:
        try:
            await pool.execute("INSERT INTO orders (item) VALUES ('after-failover')")
            return int(await pool.fetchval("SELECT current_setting('port')::int"))
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
            return None  # a pooled connection to the fenced primary: an activity's retry, here the loop

    assert await wait_until(on_new_primary, timeout=30, what="the pool on the new primary") == standby.port
    assert await pool.fetchval("SELECT count(*) FROM orders") == 151  # RPO 0: nothing committed lost
    await pool.close()


async def _at_least(dsn: str, n: int) -> int | None:
    rows = await _rows(dsn)
    return rows if rows is not None and rows >= n else None


async def _archived(folder: Path, segment: str) -> bool | None:
    return True if (folder / segment).exists() else None

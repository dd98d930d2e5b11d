"""asyncpg pool with pgvector's codec registered on every connection.

careflow keeps no session state on pooled connections (no session SET, LISTEN or session advisory
locks: use SET LOCAL and pg_advisory_xact_lock), so a released connection only needs an open
transaction rolled back.  asyncpg's default reset would spend one extra round trip per release
(`RESET ALL; UNLISTEN *; ...`), which is most of the AI gateway's per-call overhead.
"""

from __future__ import annotations

import asyncpg
from pgvector.asyncpg import register_vector

from careflow.config import Settings
from careflow.db import endpoint

IDLE_SESSION_LIFETIME_S = 30.0


async def _init_connection(conn: asyncpg.Connection) -> None:
    await register_vector(conn)


async def _release(conn: asyncpg.Connection) -> None:
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """Open the pool; the `vector` extension must exist (migration 0001 creates it).  Each new connection
    goes to the primary of the moment (careflow/db/endpoint.py), so a failover needs no restart."""

    async def connect(*args: object, **kwargs: object) -> asyncpg.Connection:
        return await asyncpg.connect(endpoint.active_url(settings), **kwargs)

    pool = await asyncpg.create_pool(
        connect=connect,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        init=_init_connection,
        reset=_release,
        command_timeout=60,
        # Idle sessions close after a while, so that a Postgres asked to stop "smart" (SIGTERM,
        # which waits for every client to leave) is not held open forever by idle pools.
        max_inactive_connection_lifetime=IDLE_SESSION_LIFETIME_S,
    )
    assert pool is not None
    return pool

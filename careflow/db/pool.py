"""asyncpg pool with pgvector's codec registered on every connection."""

from __future__ import annotations

import asyncpg
from pgvector.asyncpg import register_vector

from careflow.config import Settings


async def _init_connection(conn: asyncpg.Connection) -> None:
    await register_vector(conn)


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """Open the pool; the `vector` extension must exist (migration 0001 creates it)."""
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        init=_init_connection,
        command_timeout=60,
    )
    assert pool is not None
    return pool

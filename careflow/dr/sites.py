"""The two Postgres sites of a careflow deployment (seed P20): the primary (what the active endpoint
names, careflow/db/endpoint.py) and the standby (the other one).  On the embedded stack each site is
an `EmbeddedPostgres` cluster this machine can fence and promote; a production deployment puts
Patroni's or the managed database's calls behind the same three operations (probe, fence, promote).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from careflow.config import Settings
from careflow.db import endpoint, replication
from careflow.db.embedded import EmbeddedPostgres
from careflow.models.dr import Site


def at_port(settings: Settings, port: int | None) -> str:
    """The configured database URL (its user, host and database) on another port: a site's real URL
    from the credential-free one a workflow carries, so a payload can never point careflow at a
    database it was not configured with."""
    parts = urlsplit(settings.database_url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user + '@' if user else ''}{parts.hostname}:{port or 5432}"))


def redacted(url: str) -> str:
    """host:port/db, never a password."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port or 5432}", parts.path, "", ""))


def urls(settings: Settings) -> tuple[str, str]:
    """(primary, standby): the active endpoint, and the other of the configured pair."""
    configured, standby = settings.database_url, at_port(settings, settings.standby_port)
    active = endpoint.active_url(settings)
    return active, (configured if urlsplit(active).port == settings.standby_port else standby)


def cluster(settings: Settings, url: str) -> EmbeddedPostgres:
    """The embedded cluster serving `url` (the stack's primary folder, or its standby's)."""
    home, logs = settings.state_dir, settings.state_dir / "logs"
    port = urlsplit(url).port or 5432
    if port == settings.standby_port:
        pg = EmbeddedPostgres(pgdata=home / "pg-standby", port=port, log_file=logs / "postgres-standby.log")
    else:
        pg = EmbeddedPostgres(pgdata=home / "pg", port=port, log_file=logs / "postgres.log")
    # Both sites archive their finished WAL: a standby starts to once it is promoted, without a restart.
    pg.options = replication.archive_options(pg)
    return pg


async def probe(url: str, timeout: float = 3) -> Site:
    try:
        conn = await asyncpg.connect(url, timeout=timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return Site(url=redacted(url), up=False, error=type(exc).__name__)
    try:
        return Site(
            url=redacted(url), up=True, in_recovery=bool(await conn.fetchval("SELECT pg_is_in_recovery()"))
        )
    finally:
        await conn.close()


async def lag_bytes(primary_url: str) -> int | None:
    """WAL the standby has not replayed, as the (reachable) primary sees it; None: no standby connected."""
    found = [r for r in await replication.replicas(primary_url) if r.name == replication.SLOT]
    return found[0].lag_bytes if found else None


async def heard_s(standby_url: str) -> float | None:
    """Seconds since the standby last heard from its primary (None: not receiving)."""
    conn = await asyncpg.connect(standby_url, timeout=3)
    try:
        value = await conn.fetchval(
            "SELECT EXTRACT(EPOCH FROM now() - last_msg_receipt_time) FROM pg_stat_wal_receiver"
        )
        return float(value) if value is not None else None
    finally:
        await conn.close()


async def fence(settings: Settings, url: str, why: str) -> None:
    """Fenced for sure, or an error (the activity retries): the standby is never promoted while the old
    primary might still take a write."""
    pg = cluster(settings, url)
    if not pg.fence_file.exists() or pg.is_running():
        await asyncio.to_thread(pg.fence, why)
    if pg.is_running() or (await probe(url, timeout=2)).up:
        raise RuntimeError(f"{redacted(url)} still answers after fencing: the standby is not promoted")


async def promote(settings: Settings, url: str) -> None:
    """The standby ends recovery (already a primary: nothing to do) and stops waiting for a standby of
    its own on commit until one is built."""
    if (await probe(url)).in_recovery:
        await asyncio.to_thread(cluster(settings, url).promote)
    await replication.set_synchronous(url, False)

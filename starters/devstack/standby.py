"""The embedded stack's hot standby (`careflow dev up --standby`, seed P20): a second cluster under
CAREFLOW_HOME/pg-standby on `standby_port`, streaming from the primary (careflow/db/replication.py),
and what `dev status` says of it: its replication state and lag as the primary sees them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from careflow.config import Settings
from careflow.db import replication
from careflow.db.embedded import EmbeddedPostgres


def exists(standby: EmbeddedPostgres) -> bool:
    return (standby.data_dir / "PG_VERSION").exists()


async def up(
    primary: EmbeddedPostgres, standby: EmbeddedPostgres, settings: Settings, say: Callable[[str], None]
) -> None:
    """Start the standby (cloning the primary the first time), then the commit mode once it streams."""
    if standby.fence_file.exists():
        say(
            f"postgres-standby: {standby.data_dir} was the primary until a failover "
            f"({standby.fence_file.read_text().strip()}); it stays fenced until rebuilt as a standby"
        )
        return
    if not exists(standby):  # cloned, streaming, its commit mode set
        await replication.make_standby(primary, standby, settings.standby_synchronous)
        say(f"postgres-standby: cloned from the primary, on 127.0.0.1:{standby.port} (pid {standby.pid()})")
    else:
        if standby.is_running():
            say(f"postgres-standby: already running (pid {standby.pid()}, port {standby.port})")
        else:
            await asyncio.to_thread(standby.start)
            say(f"postgres-standby: started on 127.0.0.1:{standby.port} (pid {standby.pid()})")
        await replication.streaming(primary.dsn("postgres"))
        await replication.set_synchronous(primary.dsn("postgres"), settings.standby_synchronous)
    say(f"postgres-standby: {describe(await replication.replicas(primary.dsn('postgres')))}")


def describe(replicas: list[replication.Replica]) -> str:
    mine = [r for r in replicas if r.name == replication.SLOT]
    if not mine:
        return "not connected to the primary"
    r = mine[0]
    lag = f", replay lag {r.replay_lag_s:.3f} s" if r.replay_lag_s is not None else ""
    return f"{r.state} ({r.sync}), {r.lag_bytes} bytes behind{lag}"


async def state(primary: EmbeddedPostgres, standby: EmbeddedPostgres) -> tuple[bool, str]:
    """(healthy, detail) for `dev status`: streaming from the primary, with its lag."""
    try:
        found = await replication.replicas(primary.dsn("postgres"))
    except (OSError, asyncpg.PostgresError) as exc:
        return False, f"primary unreachable ({type(exc).__name__})"
    detail = describe(found)
    return detail.startswith("streaming"), f"127.0.0.1:{standby.port}: {detail}"

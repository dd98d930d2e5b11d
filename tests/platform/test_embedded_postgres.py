"""Embedded Postgres on a machine where nothing is prepared: no system user yet, a clone in a
private (mode 0700) folder, run as root or not.  Regression for the first `make run` crashing with
`getpwnam(): name not found: 'embedded_postgres'` and for initdb being out of the system user's reach."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from careflow.db.embedded import WHEEL_INSTALL, EmbeddedPostgres, system_user_exists
from careflow.net import free_port

pytestmark = pytest.mark.stack  # starts servers of its own

AS_ROOT = os.geteuid() == 0


@pytest.fixture
def new_user() -> Iterator[str]:
    """A system user name that does not exist yet (deleted again afterwards)."""
    name = f"cf_pg_{uuid.uuid4().hex[:10]}"
    assert not system_user_exists(name)
    yield name
    if AS_ROOT and system_user_exists(name):
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def private_clone(tmp_path: Path) -> Path:
    """A clone folder below a mode-0700 parent, as root's home or any `mktemp -d` is."""
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    clone = private / "careflow" / ".careflow"
    clone.mkdir(parents=True)
    return clone


async def test_starts_without_the_system_user_from_a_private_folder(
    new_user: str, private_clone: Path
) -> None:
    pg = EmbeddedPostgres(
        pgdata=private_clone / "pg",
        port=free_port(),
        log_file=private_clone / "logs" / "pg.log",
        system_user=new_user,
    )
    # What `dev up` asks first: nothing may run as the (missing) user before start() prepares it.
    assert pg.is_running() is False
    assert pg.pid() is None
    assert not system_user_exists(new_user)
    try:
        pg.start()
        assert pg.is_running()
        conn = await asyncpg.connect(pg.dsn("postgres"))
        try:
            assert (
                await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'") == 1
            )
        finally:
            await conn.close()
        pg.start()  # idempotent
        # The private folder was not opened to others.
        assert (private_clone.parent.parent.stat().st_mode & 0o777) == 0o700
        if AS_ROOT:
            owner = pwd.getpwnam(new_user)
            assert pg.install_dir != WHEEL_INSTALL and (pg.install_dir / "bin" / "postgres").exists()
            assert not pg.data_dir.is_relative_to(private_clone)
            assert pg.data_dir.stat().st_uid == owner.pw_uid
            assert (pg.data_dir.stat().st_mode & 0o777) == 0o700
            assert (pg.cluster_dir / "ORIGIN").read_text().strip() == str(pg.pgdata)
        else:
            assert pg.data_dir == (private_clone / "pg").resolve()
    finally:
        pg.remove()
    assert not pg.is_running()
    assert not pg.data_dir.exists()


def test_where_the_files_live(private_clone: Path) -> None:
    a = EmbeddedPostgres(pgdata=private_clone / "pg", port=1, log_file=private_clone / "pg.log")
    b = EmbeddedPostgres(pgdata=private_clone / "other", port=1, log_file=private_clone / "pg.log")
    if AS_ROOT:
        # One careflow-owned folder per requested data folder, outside the private tree.
        assert a.data_dir.parent != b.data_dir.parent
        assert a.data_dir.is_relative_to(a.runtime_root) and a.log_path.is_relative_to(a.runtime_root)
        assert a.install_dir.is_relative_to(a.runtime_root) and a.install_dir != WHEEL_INSTALL
    else:
        assert (a.data_dir, a.log_path, a.install_dir) == (a.pgdata, a.log_file, WHEEL_INSTALL)


async def test_a_server_stuck_in_smart_shutdown_is_recognised_and_restarted(tmp_path: Path) -> None:
    """SIGTERM asks Postgres for a smart shutdown, which waits for every open session: with a pool
    holding one, it never finishes.  `accepts_connections` sees it; `stop` (fast, then immediate)
    ends it; `start` brings it back, which is what `careflow dev up` does."""
    pg = EmbeddedPostgres(pgdata=tmp_path / "pg", port=free_port(), log_file=tmp_path / "pg.log")
    try:
        pg.start()
        held = await asyncpg.connect(pg.dsn("postgres"))
        pid = pg.pid()
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        try:
            assert await asyncio.to_thread(pg.accepts_connections, 2) is False
            assert pg.is_running()  # still there, serving only the session it had
            assert await held.fetchval("SELECT 1") == 1
            pg.stop()
            assert not pg.is_running()
        finally:
            held.terminate()
        pg.start()
        assert await asyncio.to_thread(pg.accepts_connections, 10)
    finally:
        pg.remove()

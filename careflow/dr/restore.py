"""Restoring a backup (seed P20), without Temporal: pick a full backup from the store by its manifest
(no catalog needed: the database may be what was lost), fetch every object and check its SHA-256, lay
the base backup out as a cluster, give it the archived WAL and a recovery target, and let Postgres
replay to that point and promote.  The drill does this into a scratch cluster and checks what came back.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from careflow.db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from careflow.dr.backup import removable_wal, wal_of_key
from careflow.dr.store import BackupStore, sha256_file
from careflow.security.logging import get_logger

MANIFEST = "manifest.json"
log = get_logger("careflow.dr.restore")


class ChecksumMismatch(Exception):
    def __init__(self, key: str, expected: str, found: str) -> None:
        super().__init__(f"{key}: SHA-256 {found[:16]}... does not match the catalog's {expected[:16]}...")
        self.key = key


class NoBackup(Exception):
    pass


class MissingObject(Exception):
    """An object the manifest names is not in the store (deleted, a lifecycle rule, a tampered key)."""


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    start_wal: str
    data_as_of: datetime
    objects: list[dict[str, object]]  # kind, key, version, sha256, bytes
    counts: dict[str, int] = field(default_factory=dict)  # rows per table when the base backup ended

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        doc = json.loads(raw)
        base = doc["base"]
        return cls(
            backup_id=doc["backup_id"], start_wal=base["start_wal"],
            data_as_of=datetime.fromisoformat(base["data_as_of"]), objects=doc["objects"],
            counts={str(k): int(v) for k, v in (base.get("counts") or {}).items()},
        )  # fmt: skip


def manifests(store: BackupStore) -> list[Manifest]:
    """Every full backup's manifest in the store, newest first."""
    found = []
    with tempfile.TemporaryDirectory(prefix="careflow-manifest-") as tmp:
        for key in store.keys("full/"):
            if key.endswith("/" + MANIFEST):
                store.get(key, "", Path(tmp) / "m.json")
                try:
                    found.append(Manifest.parse((Path(tmp) / "m.json").read_bytes()))
                except (ValueError, KeyError, TypeError) as exc:  # not one careflow wrote: not a candidate
                    log.warning("backup manifest unreadable: skipped", key=key, error=type(exc).__name__)
    return sorted(found, key=lambda m: m.data_as_of, reverse=True)


def manifest(store: BackupStore, backup_id: str) -> Manifest:
    """One full backup's manifest (NoBackup: it is not in the store)."""
    with tempfile.TemporaryDirectory(prefix="careflow-manifest-") as tmp:
        try:
            store.get(f"full/{backup_id}/{MANIFEST}", "", Path(tmp) / MANIFEST)
        except FileNotFoundError:
            raise NoBackup(f"no backup {backup_id} in the store") from None
        return Manifest.parse((Path(tmp) / MANIFEST).read_bytes())


def choose(found: Sequence[Manifest], backup_id: str | None, at: datetime | None) -> Manifest:
    """The backup asked for, or the newest whose data is older than the point to restore to."""
    for m in found:
        if (backup_id is None or m.backup_id == backup_id) and (at is None or m.data_as_of <= at):
            return m
    what = f"backup {backup_id}" if backup_id else "full backup"
    when = f" older than {at.isoformat()}" if at else ""
    raise NoBackup(f"no {what}{when} in the store")


def fetch(
    store: BackupStore, objects: Sequence[dict[str, object]], prefix: str, dest: Path,
    progress: Callable[[str, int], None] = lambda key, size: None,
) -> int:  # fmt: skip
    """Every object into `dest` (its key less `prefix`), its SHA-256 checked: a mismatch stops at that
    object.  Returns the bytes fetched."""
    total = 0
    for o in objects:
        key, expected = str(o["key"]), str(o["sha256"])
        target = dest / key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            store.get(key, str(o.get("version") or ""), target)
        except (FileNotFoundError, ValueError) as exc:
            raise MissingObject(f"{key}: {exc}") from exc
        found, size = sha256_file(target)
        if found != expected:
            raise ChecksumMismatch(key, expected, found)
        total += size
        progress(key, total)
    return total


def fetch_wal(
    store: BackupStore, start_wal: str, dest: Path, sha256: dict[str, str] | None = None
) -> list[str]:
    """The archived WAL a restore from `start_wal` may ask for (that segment on, and every timeline
    history), unpacked into `dest`; checked against the catalog's SHA-256 when given, and by gzip's
    CRC-32 always."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    keys = list(store.keys("wal/"))
    before = set(removable_wal([wal_of_key(k) for k in keys], start_wal))  # older than the backup needs
    for key in keys:
        name = wal_of_key(key)
        if name in before:
            continue
        packed = dest / f"{name}.gz"
        try:
            store.get(key, "", packed)
        except FileNotFoundError as exc:
            raise MissingObject(f"{key}: {exc}") from exc
        if sha256 is not None and key in sha256 and (found := sha256_file(packed)[0]) != sha256[key]:
            raise ChecksumMismatch(key, sha256[key], found)
        with gzip.open(packed) as src, (dest / name).open("wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        packed.unlink()
        names.append(name)
    return names


def lay_out(postgres: Path, data_dir: Path) -> None:
    """The base backup's tars as a data folder: base.tar.gz at its root, pg_wal.tar.gz in pg_wal/."""
    for name, into in (("base.tar.gz", data_dir), ("pg_wal.tar.gz", data_dir / "pg_wal")):
        into.mkdir(parents=True, exist_ok=True)
        with tarfile.open(postgres / name) as tar:
            tar.extractall(into, filter="data")
    data_dir.chmod(0o700)


def recovery_settings(wal_dir: Path, target: datetime | None) -> str:
    """postgresql.auto.conf lines that replay the archived WAL to `target` (or all of it) and promote."""
    lines = [
        f'restore_command = \'cp "{wal_dir}/%f" "%p"\'',
        "recovery_target_action = 'promote'",
        "synchronous_standby_names = ''",  # the source's standby is not this copy's: never wait for it
    ]
    if target is not None:
        lines.append(f"recovery_target_time = '{target.isoformat()}'")
    return "\n".join(lines) + "\n"


def restore_cluster(pg: EmbeddedPostgres, postgres: Path, wal: Path, target: datetime | None) -> None:
    """`pg` (a new, empty cluster) from the base backup in `postgres`, the archived WAL in `wal` replayed
    to `target` (or all of it), then promoted: returns once it takes writes.  A target past the newest
    WAL fails (Postgres refuses to end recovery short of it), with the server's log in the error."""
    pg.prepare()
    if any(pg.data_dir.iterdir()):
        raise EmbeddedPostgresError(f"{pg.data_dir} is not empty: a backup is restored into a new cluster")
    lay_out(postgres, pg.data_dir)
    restore_wal = pg.data_dir.with_name(pg.data_dir.name + "-restore-wal")
    shutil.rmtree(restore_wal, ignore_errors=True)
    shutil.move(wal, restore_wal)
    with (pg.data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write(recovery_settings(restore_wal, target))
    (pg.data_dir / "recovery.signal").touch()
    pg.take_ownership()
    pg.start(wait_s=3600)
    if not pg.wait_promoted():
        raise EmbeddedPostgresError(f"the restored cluster did not finish recovery: {pg.log_tail()}")

"""The backup store (seed P20): where base backups, WAL segments, model artifacts, knowledge-base sources
and the Temporal dev server's database go.  It speaks the S3 API (boto3: AWS S3 with versioning and
Object Lock, or any S3-compatible store); the embedded default is a folder, CAREFLOW_HOME/backups.

An object is written whole or not at all: the folder store writes a hidden file, syncs it and renames it
into place; S3 makes an object visible only once its upload completed.  Every object comes back with its
SHA-256 (computed while reading the source) and the store's version id, which the backup catalog keeps.
A full disk is `StoreFull`: the partial object is removed, nothing already stored is touched.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from careflow.config import Settings

CHUNK = 1024 * 1024
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no room: disk, quota, file size limit


_NO_ROOM = ("EntityTooLarge", "QuotaExceeded", "InsufficientStorage", "XMinioStorageFull", "StorageFull")


class StoreFull(Exception):
    """No room for the object (disk full, quota, object too large)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    version: str  # the store's version id (S3 VersionId; the folder store: the content's SHA-256)
    sha256: str
    size: int


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class BackupStore(Protocol):
    where: str  # for messages and the catalog: a folder or s3://bucket/prefix, never a credential

    def put(self, key: str, source: Path) -> StoredObject: ...

    def get(self, key: str, version: str, dest: Path) -> None: ...

    def delete(self, key: str, version: str) -> None: ...

    def keys(self, prefix: str = "") -> list[str]: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ValueError(f"not a backup object key: {key!r}")
    return key


class FolderStore:
    """Objects as files under one folder (the embedded default; a mounted NAS works the same way)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.where = str(self.root)

    def put(self, key: str, source: Path) -> StoredObject:
        target = self.root / _check_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        digest, size = hashlib.sha256(), 0
        try:
            with source.open("rb") as src, partial.open("wb") as out:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if exc.errno in FULL_ERRNOS:
                free = shutil.disk_usage(self.root).free
                raise StoreFull(
                    f"backup store {self.where} is full writing {key} ({free} bytes free)"
                ) from exc
            raise
        return StoredObject(key, digest.hexdigest(), digest.hexdigest(), size)

    def get(self, key: str, version: str, dest: Path) -> None:
        source = self.root / _check_key(key)
        if not source.exists():
            raise FileNotFoundError(f"{key} is not in the backup store {self.where}")
        shutil.copyfile(source, dest)

    def delete(self, key: str, version: str) -> None:
        (self.root / _check_key(key)).unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in found if k.startswith(prefix) and not k.rsplit("/", 1)[-1].startswith("."))


class S3Store:
    """Objects in an S3 bucket (boto3; credentials from the AWS environment, profile or instance role).
    With bucket versioning on, every object keeps its version id; with Object Lock, a retained version
    cannot be deleted early, by careflow or anyone (its deletion is refused and the object stays)."""

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        import boto3

        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an S3 location (s3://bucket/prefix): {url!r}")
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        self.where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._s3: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}" if self.prefix else _check_key(key)

    def put(self, key: str, source: Path) -> StoredObject:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError

        digest, size = sha256_file(source)
        try:
            self._s3.upload_file(
                str(source), self.bucket, self._key(key), ExtraArgs={"Metadata": {"sha256": digest}}
            )
        except (ClientError, S3UploadFailedError) as exc:  # upload_file wraps the service's error
            if any(code in str(exc) for code in _NO_ROOM):
                raise StoreFull(f"backup store {self.where} refused {key}: {exc}") from exc
            raise
        head = self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        return StoredObject(key, head.get("VersionId") or "null", digest, size)

    def _version(self, version: str) -> dict[str, str]:
        return {"VersionId": version} if version and version != "null" else {}

    def get(self, key: str, version: str, dest: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self._s3.download_file(self.bucket, self._key(key), str(dest), ExtraArgs=self._version(version))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchVersion"):
                raise FileNotFoundError(f"{key} is not in the backup store {self.where}") from exc
            raise

    def delete(self, key: str, version: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._key(key), **self._version(version))

    def keys(self, prefix: str = "") -> list[str]:
        mine = self.prefix + "/" if self.prefix else ""
        found: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=mine + prefix
        ):
            found += [o["Key"].removeprefix(mine) for o in page.get("Contents", [])]
        return sorted(found)


def open_store(settings: Settings) -> BackupStore:
    """The configured store: `CAREFLOW_BACKUP_STORE` s3://bucket/prefix, a folder path, or (unset) the
    folder CAREFLOW_HOME/backups."""
    where = settings.backup_store.strip()
    if where.startswith("s3://"):
        return S3Store(where, settings.backup_s3_endpoint_url)
    return FolderStore(Path(where) if where else settings.state_dir / "backups")

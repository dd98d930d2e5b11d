"""Models of backups (seed P20): `BackupWorkflow`, a nightly full backup and a WAL shipment every few
minutes (Temporal Schedules), or one now (`careflow dr backup`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

BACKUP_ID_PREFIX = "dr-backup-"
NIGHTLY_SCHEDULE_ID = "dr-backup-nightly"
WAL_SCHEDULE_ID = "dr-wal-shipping"
NIGHTLY_CRON = "30 2 * * *"  # 02:30, the hospital's quietest hour
WAL_EVERY_MINUTES = 15  # with archive_timeout, the archive's RPO: at most ~2 x this

BackupKind = Literal["full", "wal"]
ObjectKind = Literal["base", "wal", "models", "kb-sources", "temporal", "manifest"]
BackupOutcome = Literal["complete", "failed"]


class BackupInput(BaseModel):
    kind: BackupKind = "full"
    requested_by: str = Field("schedule", pattern=r"^[A-Za-z0-9._@-]{1,64}$")
    keep: int | None = Field(None, ge=1)  # complete full backups kept; None: the setting
    search_attributes: bool = True  # False only on the time-skipping test server (none registered there)


class StoredRef(BaseModel):
    kind: ObjectKind
    key: str
    version: str
    sha256: str
    bytes: int


class BaseInfo(BaseModel):
    start_wal: str
    stop_lsn: str
    timeline: int
    data_as_of: datetime
    objects: int
    bytes: int
    counts: dict[str, int] = {}  # rows per table right after the base backup (the drill compares)


class Stored(BaseModel):
    """What one step stored (and what it found nothing to store for, with why)."""

    objects: int = 0
    bytes: int = 0
    skipped: list[str] = []


class BackupRef(BaseModel):
    backup_id: str
    kind: BackupKind
    requested_by: str


class FinishRequest(BaseModel):
    ref: BackupRef
    base: BaseInfo | None = None


class FailRequest(BaseModel):
    backup_id: str
    error: str


class Pruned(BaseModel):
    backups: list[str] = []  # full backups expired (their objects deleted)
    objects: int = 0  # objects deleted from the store
    wal_local: int = 0  # archived segments deleted from the server's archive folder (already stored)
    refused: int = 0  # deletions the store refused (Object Lock retention): kept


class BackupResult(BaseModel):
    backup_id: str
    kind: BackupKind
    outcome: BackupOutcome | Literal["running"] = "running"
    stage: str = "starting"
    store: str = ""
    base: BaseInfo | None = None
    objects: int = 0
    bytes: int = 0
    skipped: list[str] = []
    pruned: Pruned | None = None
    reason: str = ""

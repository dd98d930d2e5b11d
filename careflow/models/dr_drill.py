"""Models of the restore drill (seed P20): `DRDrillWorkflow`, monthly (a Temporal Schedule) or now
(`careflow dr drill`): the latest backup restored into a scratch cluster and checked."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

DRILL_ID_PREFIX = "dr-drill-"
DRILL_SCHEDULE_ID = "dr-drill-monthly"
DRILL_CRON = "0 4 1 * *"  # 04:00 on the first of each month


class DrillInput(BaseModel):
    backup_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._:-]{1,200}$")  # None: the newest fitting `at`
    at: datetime | None = None  # the point in time to restore to; None: all the WAL there is
    requested_by: str = Field("schedule", pattern=r"^[A-Za-z0-9._@-]{1,64}$")
    search_attributes: bool = True  # False only on the time-skipping test server


class PlanRequest(BaseModel):
    drill_id: str
    requested_by: str
    backup_id: str | None = None
    at: datetime | None = None


class DrillPlan(BaseModel):
    drill_id: str
    backup_id: str
    data_as_of: datetime  # the backup's own point
    at: datetime | None = None
    marker_at: datetime  # written on the live primary as the drill began (restored: nothing older lost)
    counts: dict[str, int] = {}  # rows per table when the backup ended (its manifest)


class TableCount(BaseModel):
    table: str
    at_backup: int
    restored: int


class DrillChecks(BaseModel):
    objects_verified: int = 0  # SHA-256 checked against the manifest
    bytes: int = 0
    wal_files: int = 0
    restore_s: float = 0.0  # fetching, laying out, replaying, until it took connections as a primary
    restored_to: datetime | None = None  # the last transaction replayed
    marker_restored: bool = False
    data_age_s: float | None = None  # what a restore now would lose (0: everything before the drill)
    counts: list[TableCount] = []
    audit_ok: bool = False
    audit_rows: int = 0
    golden_questions: int = 0
    golden_recall: float | None = None  # on the restored copy
    live_recall: float | None = None  # the same questions on the live primary
    failures: list[str] = []  # each check that did not hold, named


class ObjectiveCheck(BaseModel):
    feature: str
    restore_s: float
    objective_rto_s: float
    data_age_s: float | None
    objective_rpo_s: float
    met: bool


class DrillResult(BaseModel):
    drill_id: str
    requested_by: str = "schedule"
    stage: str = "planning"
    outcome: Literal["running", "passed", "failed"] = "running"
    failed_check: str = ""  # plan, checksum, restore, verify
    reason: str = ""
    plan: DrillPlan | None = None
    checks: DrillChecks | None = None
    objectives: list[ObjectiveCheck] = []

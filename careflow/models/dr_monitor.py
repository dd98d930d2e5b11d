"""Models of the health monitor (seed P20): `DRMonitorWorkflow`, started by the `dr-health-monitor`
Schedule (one run at a time, the next as soon as one ends): it probes the database primary and the
self-hosted inference servers, and when one has failed every probe for `dr_failover_after_s` it starts a
`DRFailoverWorkflow` (`dr-failover-auto-<what>-<first failed probe>`), automatic or awaiting approval
by setting."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

MONITOR_SCHEDULE_ID = "dr-health-monitor"
MONITOR_ID = "dr-monitor"  # the Schedule appends each run's time
REQUESTED_BY = "health-monitor"


class MonitorInput(BaseModel):
    watch_minutes: float = Field(60, gt=0)  # one run watches this long, then the Schedule starts the next
    # After a database failover that did not end failed-over (refused, not approved), this long before
    # the next run may start another: operations were told, and the standby will not change by itself.
    cooldown_minutes: float = Field(30, ge=0)
    # The settings' thresholds unless given (tests pass seconds).
    failover_after_s: float | None = Field(None, gt=0)
    probe_every_s: float | None = Field(None, gt=0)
    search_attributes: bool = True
    canary_queues: list[str] | None = None  # the failover's canary (careflow/models/dr.py FailoverInput)


class WatchRequest(BaseModel):
    workflow_id: str
    watch_s: float
    failover_after_s: float | None = None
    probe_every_s: float | None = None


class Alarm(BaseModel):
    failed: Literal["database", "inference", "both"]
    since: datetime  # the first failed probe of the unbroken run that raised it: the RTO's start
    reason: str
    automatic: bool  # the setting dr_auto_failover where the probes ran


class MonitorResult(BaseModel):
    outcome: Literal["healthy", "failover-started", "failed-over", "failover-ended"]
    alarm: Alarm | None = None
    incident: str | None = None
    failover_stage: str | None = None

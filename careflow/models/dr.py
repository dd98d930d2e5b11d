"""Models of disaster recovery (seed P20): `DRFailoverWorkflow`, one per incident
(`dr-failover-<incident>`), started by an operator (`careflow dr failover`) or by the health monitor."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field

PIPELINE = "dr"  # the CareflowPipeline search attribute's value
WORKFLOW_ID_PREFIX = "dr-failover-"

Incident = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


def workflow_id(incident: str) -> str:
    """One failover per incident: a second request for the same incident attaches to the first."""
    return WORKFLOW_ID_PREFIX + incident


class FailoverStage(StrEnum):
    ASSESSING = "assessing"  # what failed: the database primary, the inference tier, both, nothing
    AWAITING_APPROVAL = "awaiting-approval"  # an operator's `approve_failover`, escalated on a timer
    FENCING = "fencing"  # the old primary can never take writes again
    PROMOTING = "promoting"  # the standby becomes the primary
    SWITCHING = "switching"  # every process's next connection goes to it
    VERIFYING = "verifying"  # a write, the audit chain on the new primary
    FAILED_OVER = "failed-over"
    # The self-hosted inference tier (alone, or before the database's failover when both failed):
    REROUTING = "rerouting"  # its breakers held open: its tiers answer from their fallback
    REROUTED = "rerouted"  # inference alone failed: the tiers are on their fallback, the server awaited
    INFERENCE_RESTORED = "inference-restored"  # the server answers again: its breakers released
    # Named outcomes that change nothing:
    NOTHING_FAILED = "nothing-failed"  # both sites answer: nothing to fail over
    REFUSED = "refused"  # no standby to promote, or it lags beyond the RPO (unless forced)
    NOT_APPROVED = "not-approved"  # nobody approved before the deadline
    VERIFY_FAILED = "verify-failed"  # promoted and switched, but the checks did not pass: operations paged
    FAILOVER_FAILED = "failover-failed"  # fenced, then promote/switch/verify gave up: operations paged

    @property
    def settled(self) -> bool:
        return self in _SETTLED


_SETTLED = {
    FailoverStage.FAILED_OVER,
    FailoverStage.REROUTED,
    FailoverStage.INFERENCE_RESTORED,
    FailoverStage.NOTHING_FAILED,
    FailoverStage.REFUSED,
    FailoverStage.NOT_APPROVED,
    FailoverStage.VERIFY_FAILED,
    FailoverStage.FAILOVER_FAILED,
}


class FailoverInput(BaseModel):
    incident: Incident
    requested_by: str = Field(min_length=1, max_length=64)  # an operator, or "health-monitor"
    reason: str = Field(min_length=3, max_length=500)
    detected_at: datetime | None = None  # the first failed probe (RTO starts there); None: the start
    automatic: bool = False  # False: wait for an operator's approve_failover
    planned: bool = False  # a switchover while the primary still answers (maintenance, a site evacuated)
    force: bool = False  # promote even when the standby lags beyond max_lag_bytes (audited)
    max_lag_bytes: int = Field(1024 * 1024, ge=0)  # the RPO guard for asynchronous replication
    escalate_minutes: float = Field(5, gt=0)  # no approval by then: the next on-call tier is paged
    # A rerouted self-hosted server not answering by then: its breakers are released to the gateway's
    # own (which keeps its tiers on the fallback while it fails) and the failover ends.
    inference_wait_hours: float = Field(72, gt=0)
    approval_hours: float = Field(1, gt=0)  # no approval by then: not-approved
    search_attributes: bool = True
    # After the switch the platform canary probes these queues: each one's workers must reach the new
    # primary.  Empty: only the queue the failover runs on; None: starters/clients/dr.py fills in every
    # careflow queue (the CLI, the demo, the bench; the monitor's Schedule names them itself).
    canary_queues: list[str] | None = None


class Site(BaseModel):
    """One Postgres as the assessment found it."""

    url: str  # postgresql://host:port/db, no credentials (a DSN with a password is never carried)
    up: bool
    in_recovery: bool | None = None  # True: a standby; None: unreachable
    error: str = ""


class InferenceSite(BaseModel):
    """A self-hosted inference server (the gateway's `self_hosted` provider) as the assessment found it."""

    provider: str
    url: str  # its model list's URL, no credentials
    up: bool


class Assessment(BaseModel):
    failed: Literal["database", "inference", "both", "nothing"]
    primary: Site
    standby: Site | None  # None: no standby configured
    lag_bytes: int | None  # WAL the standby had not replayed (None: not measurable, primary down)
    synchronous: bool | None
    standby_heard_s: float | None = None  # seconds since the standby last heard from the primary
    inference: list[InferenceSite] = Field(default_factory=list)

    @property
    def database_failed(self) -> bool:
        return self.failed in ("database", "both")

    @property
    def inference_down(self) -> list[str]:
        return [i.provider for i in self.inference if not i.up]


class TierMove(BaseModel):
    """One gateway tier whose primary is a held provider: who answers it meanwhile."""

    tier: str
    provider: str  # the held (down) primary
    fallback: str | None  # the tier map's fallback provider (None: none configured, the tier waits)
    model: str | None
    phi: bool  # PHI requests are answered (the fallback is permitted PHI); else they wait for the server


class RerouteRequest(BaseModel):
    workflow_id: str
    incident: str
    providers: list[str]  # the self-hosted providers found down


class Rerouted(BaseModel):
    held: list[str]  # providers whose breakers this incident holds open
    moves: list[TierMove]
    at: datetime
    restored_at: datetime | None = None


class Approval(BaseModel):
    by: str = Field(min_length=1, max_length=64)
    note: str = Field(default="", max_length=500)


class StepRequest(BaseModel):
    workflow_id: str
    incident: str
    url: str  # the site the step acts on
    failed: str = ""  # a page: what failed after the fence ("": nobody approved in time)


class Verified(BaseModel):
    ok: bool
    first_write_at: datetime | None
    audit_ok: bool
    audit_rows: int
    reason: str = ""
    # The golden RAG questions on the new primary against the live recall the last drill measured
    # (None: no knowledge base; no baseline: recorded, not judged).
    golden_questions: int = 0
    golden_recall: float | None = None
    golden_baseline: float | None = None
    # The platform canary after the switch (None: not run, a failover recorded before it existed).
    canary_healthy: bool | None = None
    canary_unreachable: dict[str, str] = Field(default_factory=dict)


class FeatureRecovery(BaseModel):
    feature: str
    rto_s: float
    rpo: str  # "0 (synchronous)", "<= N bytes", "unknown (primary down, asynchronous)"
    objective_rto_s: float
    met: bool


class RecordRequest(BaseModel):
    workflow_id: str
    incident: str
    requested_by: str
    approved_by: str | None
    forced: bool
    detected_at: datetime
    promoted_at: datetime | None
    first_write_at: datetime | None
    lag_bytes: int | None
    synchronous: bool | None
    outcome: str
    steps: list[tuple[str, datetime]]
    rerouted_at: datetime | None = None  # the inference tier's breakers held: its features' RTO ends


class FailoverStatus(BaseModel):
    incident: str
    stage: FailoverStage = FailoverStage.ASSESSING
    reason: str = ""
    assessment: Assessment | None = None
    approved_by: str | None = None
    escalated: bool = False
    stages: list[tuple[str, datetime]] = Field(default_factory=list)
    verified: Verified | None = None
    recovery: list[FeatureRecovery] = Field(default_factory=list)
    rerouted: Rerouted | None = None

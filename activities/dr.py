"""Activities of the DR failover (seed P20): assess both sites, fence the old primary, promote the
standby, move every process to it, verify, record the measured recovery.

Thin: the operations are careflow/dr/sites.py's.  Each is idempotent (fencing a fenced primary,
promoting a primary, switching to where the endpoint already points change nothing), so a retry after
a lost completion is safe.  The failing database cannot hold the audit trail of its own failover: the
workflow keeps every step with its time, and `record` writes them to the new primary's chain.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from temporalio import activity

from activities.heartbeat import beating
from careflow.audit import trail
from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.db import endpoint, replication
from careflow.dr import sites
from careflow.dr.objectives import OBJECTIVES
from careflow.idempotency import step_key
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType, AuditOutcome
from careflow.models.dr import (
    Assessment,
    FeatureRecovery,
    RecordRequest,
    StepRequest,
    Verified,
)
from careflow.models.dr_failback import RebuildRequest, Rebuilt
from careflow.notify.notifier import Notifier
from careflow.security.logging import get_logger

log = get_logger("careflow.dr")


class DrActivities:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, notifier: Notifier) -> None:
        self._settings, self._pool, self._notifier = settings, pool, notifier

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.assess,
            self.fence,
            self.promote,
            self.switch,
            self.verify,
            self.record,
            self.page,
            self.rebuild,
        ]

    def _url(self, site_url: str) -> str:
        return sites.at_port(self._settings, urlsplit(site_url).port)

    @activity.defn(name="dr.assess")
    async def assess(self, workflow_id: str) -> Assessment:
        """What failed: the primary answers as a primary (nothing), or it does not (the database)."""
        primary_url, standby_url = sites.urls(self._settings)
        primary, standby = await sites.probe(primary_url), await sites.probe(standby_url)
        lag = heard = None
        if primary.up and not primary.in_recovery:
            lag = await sites.lag_bytes(primary_url)
            failed = "nothing"
        else:
            failed = "database"
            if standby.up:
                heard = await sites.heard_s(standby_url)
        log.info(
            "dr assessment",
            workflow_id=workflow_id,
            failed=failed,
            primary_up=primary.up,
            standby_up=standby.up,
        )
        return Assessment(
            failed=failed, primary=primary, standby=standby, lag_bytes=lag,
            synchronous=self._settings.standby_synchronous, standby_heard_s=heard,
        )  # fmt: skip

    @activity.defn(name="dr.fence")
    async def fence(self, req: StepRequest) -> None:
        """The old primary never takes a write again (stopped, and refuses to start)."""
        await sites.fence(self._settings, self._url(req.url), f"{req.incident} ({req.workflow_id})")

    @activity.defn(name="dr.promote")
    async def promote(self, req: StepRequest) -> datetime:
        await sites.promote(self._settings, self._url(req.url))
        return datetime.now(UTC)

    @activity.defn(name="dr.switch")
    async def switch(self, req: StepRequest) -> None:
        """Every careflow process opens its next connection on the new primary."""
        url = self._url(req.url)
        if endpoint.active_url(self._settings) != url:
            endpoint.switch(self._settings, url, req.incident)

    @activity.defn(name="dr.verify")
    async def verify(self, req: StepRequest) -> Verified:
        """A write on the new primary through this worker's own pool (the first one sets the RTO's end),
        then the audit hash chain checked end to end there."""
        try:
            first = await self._pool.fetchval(
                """INSERT INTO dr_failovers (incident, workflow_id, requested_by, detected_at, first_write_at)
                   VALUES ($1, $2, '', now(), now())
                   ON CONFLICT (incident) DO UPDATE
                       SET first_write_at = COALESCE(dr_failovers.first_write_at, now())
                   RETURNING first_write_at""",
                req.incident, req.workflow_id,
            )  # fmt: skip
        except asyncpg.ReadOnlySQLTransactionError:
            return Verified(
                ok=False, first_write_at=None, audit_ok=False, audit_rows=0, reason="still read-only"
            )
        chain = await trail.verify(self._pool)
        reason = "" if chain.ok else f"audit chain broken at row {chain.first_broken_id}: {chain.reason}"
        return Verified(
            ok=chain.ok, first_write_at=first, audit_ok=chain.ok, audit_rows=chain.rows_checked, reason=reason
        )

    @activity.defn(name="dr.record")
    async def record(self, req: RecordRequest) -> list[FeatureRecovery]:
        """The measured recovery per feature against its objectives, the failover's row, every step in
        the audit trail, operations told."""
        recovery = measured(req)
        await self._pool.execute(
            """INSERT INTO dr_failovers (incident, workflow_id, requested_by, approved_by, forced, outcome,
                   detected_at, promoted_at, first_write_at, lag_bytes, synchronous, recovery)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb)
               ON CONFLICT (incident) DO UPDATE SET requested_by = EXCLUDED.requested_by,
                   approved_by = EXCLUDED.approved_by, forced = EXCLUDED.forced, outcome = EXCLUDED.outcome,
                   detected_at = EXCLUDED.detected_at, promoted_at = EXCLUDED.promoted_at,
                   first_write_at = COALESCE(dr_failovers.first_write_at, EXCLUDED.first_write_at),
                   lag_bytes = EXCLUDED.lag_bytes, synchronous = EXCLUDED.synchronous,
                   recovery = EXCLUDED.recovery""",
            req.incident, req.workflow_id, req.requested_by, req.approved_by, req.forced, req.outcome,
            req.detected_at, req.promoted_at, req.first_write_at, req.lag_bytes, req.synchronous,
            json.dumps([r.model_dump() for r in recovery]),
        )  # fmt: skip
        audit = PostgresAuditTrail(self._pool)
        for step, at in req.steps:
            actor = req.approved_by if step == "approved" and req.approved_by else req.requested_by
            await audit.append(
                AuditEvent(
                    event_type=AuditEventType.SYSTEM_OPERATION, actor=actor,
                    actor_type="service" if actor == "health-monitor" else "user", action=AuditAction.EXECUTE,
                    outcome=AuditOutcome.SUCCESS, resource_type="Database", resource_id=req.incident,
                    workflow_id=req.workflow_id, occurred_at=at,
                    detail={"step": step, "forced": str(req.forced).lower(), "outcome": req.outcome},
                ),
                event_key=step_key(req.workflow_id, f"audit-{step}"),
            )  # fmt: skip
        body = {
            "incident": req.incident,
            "outcome": req.outcome,
            "recovery": [r.model_dump() for r in recovery],
        }
        await self._notifier.send(
            dedup_key=step_key(req.workflow_id, "record"), kind="dr-failover", recipient_id="operations",
            workflow_id=req.workflow_id, body=body,
        )  # fmt: skip
        return recovery

    @activity.defn(name="dr.rebuild")
    async def rebuild(self, req: RebuildRequest) -> Rebuilt:
        """The other site as a streaming standby of this primary: its data cloned anew (a fenced old
        primary's last commits are not trusted; the rebuild lifts the fence), its commit mode set.
        Already streaming from this primary: only the commit mode is set."""
        primary_url, standby_url = self._url(req.primary_url), self._url(req.standby_url)
        primary, standby = (
            sites.cluster(self._settings, primary_url),
            sites.cluster(self._settings, standby_url),
        )
        started = time.monotonic()
        cloned = not [r for r in await replication.replicas(primary_url) if r.name == replication.SLOT]
        if cloned:
            await asyncio.to_thread(standby.remove)
            standby.options = replication.archive_options(standby)  # it archives once it is promoted
            await beating(replication.make_standby(primary, standby, req.synchronous), {"step": "cloning"})
        else:
            await replication.streaming(primary_url)
            await replication.set_synchronous(primary_url, req.synchronous)
        [r] = [r for r in await replication.replicas(primary_url) if r.name == replication.SLOT]
        log.info("dr standby rebuilt", workflow_id=req.workflow_id, cloned=cloned, state=r.state)
        return Rebuilt(
            standby_url=sites.redacted(standby_url), state=r.state, sync=r.sync, lag_bytes=r.lag_bytes,
            seconds=round(time.monotonic() - started, 3), cloned=cloned,
        )  # fmt: skip

    @activity.defn(name="dr.page")
    async def page(self, req: StepRequest) -> None:
        """The next on-call tier: nobody approved the failover in time."""
        log.warning(
            "dr failover awaits approval: escalated", workflow_id=req.workflow_id, incident=req.incident
        )
        await self._notifier.send(
            dedup_key=step_key(req.workflow_id, "escalate"), kind="dr-escalation", recipient_id="on-call-2",
            workflow_id=req.workflow_id, body={"incident": req.incident, "awaiting": "approve_failover"},
        )  # fmt: skip


def measured(req: RecordRequest) -> list[FeatureRecovery]:
    """Each database-dependent feature's RTO (first failed probe to first write on the new primary) and
    RPO (none lost when commits waited for the standby or it had replayed everything; else unknown)
    against its objectives: an unknown loss fails only the features that may lose nothing."""
    if req.first_write_at is None:
        return []
    rto = req.first_write_at - req.detected_at
    if req.synchronous:
        rpo, none_lost = "0 (synchronous)", True
    elif req.lag_bytes is not None:
        rpo, none_lost = f"<= {req.lag_bytes} bytes of WAL", req.lag_bytes == 0
    else:
        rpo, none_lost = "unknown (asynchronous, the primary was down)", False
    return [
        FeatureRecovery(
            feature=o.feature, rto_s=round(rto.total_seconds(), 3), rpo=rpo,
            objective_rto_s=o.rto.total_seconds(), met=rto <= o.rto and (none_lost or o.rpo > timedelta(0)),
        )
        for o in OBJECTIVES
        if "database" in o.depends_on
    ]  # fmt: skip

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
from careflow.dr import backup, health, inference, sites
from careflow.dr.objectives import GOLDEN_TOLERANCE, OBJECTIVES
from careflow.idempotency import step_key
from careflow.kb.embed import Embedder, get_embedder
from careflow.kb.evaluation import evaluate_retrieval, load_golden
from careflow.llm.gateway import Gateway
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType, AuditOutcome
from careflow.models.dr import (
    Assessment,
    FeatureRecovery,
    RecordRequest,
    Rerouted,
    RerouteRequest,
    StepRequest,
    Verified,
)
from careflow.models.dr_failback import RebuildRequest, Rebuilt
from careflow.models.dr_monitor import Alarm, WatchRequest
from careflow.notify.notifier import Notifier
from careflow.security.logging import get_logger

log = get_logger("careflow.dr")


# A rerouted server must answer this many probes in a row (dr_probe_every_s apart) before its tiers go back.
RESTORED_AFTER_PROBES = 3


class DrActivities:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        notifier: Notifier,
        gateway: Callable[[], Gateway] | None = None,  # the worker's own; None: one from the settings
        embedder: Callable[[], Embedder] = get_embedder,
    ) -> None:
        self._settings, self._pool, self._notifier, self._embedder = settings, pool, notifier, embedder
        self._make_gateway = gateway or (lambda: Gateway.from_settings(pool, settings))
        self._gateway: Gateway | None = None

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            self._gateway = self._make_gateway()
        return self._gateway

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
            self.reroute,
            self.await_inference,
            self.release,
            self.watch,
        ]

    def _url(self, site_url: str) -> str:
        return sites.at_port(self._settings, urlsplit(site_url).port)

    @activity.defn(name="dr.assess")
    async def assess(self, workflow_id: str) -> Assessment:
        """What failed: the database (the primary does not answer as a primary), the self-hosted
        inference tier (its server does not answer its model list), both, or nothing."""
        primary_url, standby_url = sites.urls(self._settings)
        primary, standby = await sites.probe(primary_url), await sites.probe(standby_url)
        servers = await inference.probe(self.gateway.providers)
        lag = heard = None
        database = not (primary.up and not primary.in_recovery)
        if not database:
            lag = await sites.lag_bytes(primary_url)
        elif standby.up:
            heard = await sites.heard_s(standby_url)
        down = any(not s.up for s in servers)
        failed = ("both" if down else "database") if database else ("inference" if down else "nothing")
        log.info(
            "dr assessment",
            workflow_id=workflow_id,
            failed=failed,
            primary_up=primary.up,
            standby_up=standby.up,
            inference_down=[s.provider for s in servers if not s.up],
        )
        return Assessment(
            failed=failed, primary=primary, standby=standby, lag_bytes=lag,
            synchronous=self._settings.standby_synchronous, standby_heard_s=heard, inference=servers,
        )  # fmt: skip

    @activity.defn(name="dr.reroute")
    async def reroute(self, req: RerouteRequest) -> Rerouted:
        """The down servers' breakers held open for this incident: every gateway in every process sends
        their tiers to the fallback on its next call, and no clinical request probes the server."""
        gw = self.gateway
        held = [p for p in req.providers if await gw.breaker.hold(p, req.incident) == req.incident]
        moves = inference.moves(gw.routes, gw.providers, set(req.providers))
        log.warning("dr inference rerouted", workflow_id=req.workflow_id, held=held,
                    tiers=[m.tier for m in moves])  # fmt: skip
        return Rerouted(held=held, moves=moves, at=datetime.now(UTC))

    @activity.defn(name="dr.await_inference")
    async def await_inference(self, req: RerouteRequest) -> datetime:
        """Until every rerouted server answers RESTORED_AFTER_PROBES probes in a row (heartbeating the
        count; a worker lost on the way starts again)."""
        servers = {
            n: p for n, p in inference.self_hosted(self.gateway.providers).items() if n in req.providers
        }
        streak = 0
        while streak < RESTORED_AFTER_PROBES:
            answers = [await p.answers(timeout=3) for p in servers.values()]
            streak = streak + 1 if all(answers) else 0
            activity.heartbeat({"answering_in_a_row": streak})
            if streak < RESTORED_AFTER_PROBES:
                await asyncio.sleep(self._settings.dr_probe_every_s)
        return datetime.now(UTC)

    @activity.defn(name="dr.release")
    async def release(self, req: RerouteRequest) -> None:
        """The incident's holds lifted: the breakers closed, the tiers back on their primary."""
        for provider in req.providers:
            await self.gateway.breaker.release(provider, req.incident)

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
        problems = [] if chain.ok else [f"audit chain broken at row {chain.first_broken_id}: {chain.reason}"]
        questions, recall, baseline = await self._golden()
        if recall is not None and baseline is not None and recall < baseline - GOLDEN_TOLERANCE:
            problems.append(
                f"golden RAG questions: recall@k {recall:.3f} on the new primary, {baseline:.3f} before"
            )
        return Verified(
            ok=not problems, first_write_at=first, audit_ok=chain.ok, audit_rows=chain.rows_checked,
            reason="; ".join(problems), golden_questions=questions, golden_recall=recall,
            golden_baseline=baseline,
        )  # fmt: skip

    async def _golden(self) -> tuple[int, float | None, float | None]:
        """The golden RAG questions retrieved on the new primary, and the live recall the newest drill
        measured (the baseline); nothing when there is no knowledge base."""
        if not await self._pool.fetchval("SELECT EXISTS (SELECT 1 FROM kb_chunks)"):
            return 0, None, None
        found = await evaluate_retrieval(self._pool, load_golden(), embedder=self._embedder())
        baseline = await self._pool.fetchval(
            """SELECT (checks->>'live_recall')::float FROM dr_drills
                WHERE checks->>'live_recall' IS NOT NULL ORDER BY started_at DESC LIMIT 1"""
        )
        return found.questions, round(found.recall_at_k, 4), baseline

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
            # One message per phase recorded (failed over; then the inference tier restored).
            dedup_key=step_key(req.workflow_id, f"record-{req.steps[-1][0]}"), kind="dr-failover",
            recipient_id="operations",
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
            # WAL the old site archived and the store may not have yet (its last timeline) is kept: it
            # joins the primary's archive folder, which the next WAL shipment empties into the store.
            await asyncio.to_thread(backup.adopt_archive, standby.wal_archive_dir, primary.wal_archive_dir)
            await asyncio.to_thread(standby.remove)
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

    @activity.defn(name="dr.watch")
    async def watch(self, req: WatchRequest) -> Alarm | None:
        """Probe every `probe_every_s` for `watch_s` (heartbeating each target's run of failures) and
        raise an alarm as soon as one has failed every probe for `failover_after_s`: the database when
        the primary does not answer as a primary while a standby could take over, a self-hosted
        inference server when it does not answer its model list and no failover holds it already."""
        every = req.probe_every_s or self._settings.dr_probe_every_s
        after = timedelta(seconds=req.failover_after_s or self._settings.dr_failover_after_s)
        streaks, deadline = health.Streaks(), time.monotonic() + req.watch_s
        servers = inference.self_hosted(self.gateway.providers)
        while time.monotonic() < deadline:
            now = datetime.now(UTC)
            primary_url, standby_url = sites.urls(self._settings)
            primary = await sites.probe(primary_url, timeout=min(every, 3))
            database_ok = primary.up and not primary.in_recovery
            if not database_ok:  # a failover needs a standby to promote; without one there is none to start
                standby = await sites.probe(standby_url, timeout=min(every, 3))
                database_ok = not (standby.up and standby.in_recovery)
            streaks.observe("database", database_ok, now)
            held = await self._held() if servers and database_ok else {}
            for name, server in servers.items():
                streaks.observe(name, name in held or await server.answers(timeout=min(every, 3)), now)
            if due := streaks.due(now, after):
                return self._alarm(due, after)
            activity.heartbeat(
                {t: f"failing since {s.isoformat()}" for t, s in streaks.failing_since.items()}
            )
            await asyncio.sleep(every)
        return None

    async def _held(self) -> dict[str, str]:
        try:
            return await self.gateway.breaker.held()
        except (OSError, asyncpg.PostgresError):
            return {}

    def _alarm(self, due: dict[str, datetime], after: timedelta) -> Alarm:
        database, servers = "database" in due, sorted(t for t in due if t != "database")
        failed = ("both" if servers else "database") if database else "inference"
        what = ", ".join((["the database primary"] if database else []) + servers)
        alarm = Alarm(
            failed=failed, since=min(due.values()), automatic=self._settings.dr_auto_failover,
            reason=f"{what}: every probe failed for {after.total_seconds():g} s (health monitor)",
        )  # fmt: skip
        log.warning("dr health alarm", failed=failed, since=alarm.since.isoformat())
        return alarm

    @activity.defn(name="dr.page")
    async def page(self, req: StepRequest) -> None:
        """The next on-call tier: nobody approved the failover in time, or it failed after the fence.
        The database that records notifications may be what is down: then the page goes to the webhook
        alone (the same idempotency key), and without a webhook the activity is retried until the
        database takes it."""
        if req.failed:
            step, body = "failover-failed", {"incident": req.incident, "failed": req.failed}
        else:
            step, body = "escalate", {"incident": req.incident, "awaiting": "approve_failover"}
        log.warning("dr page", step=step, workflow_id=req.workflow_id, incident=req.incident)
        key = step_key(req.workflow_id, step)
        try:
            await self._notifier.send(
                dedup_key=key, kind="dr-escalation", recipient_id="on-call-2", workflow_id=req.workflow_id,
                body=body,
            )  # fmt: skip
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error("dr page: the database is down, paging by webhook alone", workflow_id=req.workflow_id,
                      error=type(exc).__name__)  # fmt: skip
            if not await self._notifier.deliver_unrecorded(dedup_key=key, kind="dr-escalation", body=body):
                raise


def measured(req: RecordRequest) -> list[FeatureRecovery]:
    """Each affected feature's RTO and RPO against its objectives.  Database: from the first failed
    probe to the first write on the new primary; nothing lost when commits waited for the standby or it
    had replayed everything, else unknown (which fails only the features that may lose nothing).
    Inference: from the first failed probe to the tiers held on their fallback (the gateway's breaker
    moves each request sooner; bench/dr_bench.py measures that); it holds no data.  A feature that
    depends on both recovers when the later one does."""
    ends: dict[str, timedelta] = {}
    if req.first_write_at is not None:
        ends["database"] = req.first_write_at - req.detected_at
    if req.rerouted_at is not None:
        ends["inference"] = req.rerouted_at - req.detected_at
    if req.first_write_at is None:
        rpo, none_lost = "0 (no data in the inference tier)", True
    elif req.synchronous:
        rpo, none_lost = "0 (synchronous)", True
    elif req.lag_bytes is not None:
        rpo, none_lost = f"<= {req.lag_bytes} bytes of WAL", req.lag_bytes == 0
    else:
        rpo, none_lost = "unknown (asynchronous, the primary was down)", False
    found = []
    for o in OBJECTIVES:
        hit = [ends[d] for d in o.depends_on if d in ends]
        if not hit or not o.built:
            continue
        rto = max(hit)
        lossless = none_lost or "database" not in o.depends_on
        found.append(
            FeatureRecovery(
                feature=o.feature, rto_s=round(rto.total_seconds(), 3),
                rpo=rpo if "database" in o.depends_on else "0 (no data in the inference tier)",
                objective_rto_s=o.rto.total_seconds(),
                met=rto <= o.rto and (lossless or o.rpo > timedelta(0)),
            )
        )  # fmt: skip
    return found

"""`DRFailoverWorkflow` (seed P20), one per incident (`dr-failover-<incident>`): assess what failed
(or, `planned`, switch over from a primary that still answers).  A self-hosted inference server that
is down is rerouted, automatically (its breakers held open so its tiers answer from their fallback,
never PHI to a provider not permitted it; after the database's failover when both failed), and released
when it answers again. For the database: refuse a standby that cannot take over: absent, lagging beyond
the RPO guard, or asynchronous with the primary gone (its last commits unknowable), unless forced; wait
for an operator's `approve_failover` when not automatic (paging the next on-call tier on a timer) and
assess again after it; then fence the old primary, promote the standby, move every process to it, verify
a write, the audit chain and the golden RAG questions there, run the platform canary on every careflow
queue (a child), and record the measured RTO and RPO per feature.  A failure after the fence ends in
`failover-failed` with operations paged.

Split brain is the outcome to avoid above all: the old primary is fenced before the standby is
promoted, and a fenced cluster refuses to start.  Every step's time is kept here and written to the
new primary's audit trail by `record` (the failing database could not hold it)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.dr import DrActivities
    from careflow.models.dr import (
        PIPELINE,
        Approval,
        Assessment,
        FailoverInput,
        FailoverStatus,
        FeatureRecovery,
        RecordRequest,
        RerouteRequest,
        StepRequest,
        Verified,
        workflow_id,
    )
    from careflow.models.dr import FailoverStage as Stage
    from careflow.models.platform import CanaryInput
    from workflows import retry_rules
    from workflows import search_attributes as sa
    from workflows.platform_canary import PlatformCanaryWorkflow

CANARY_PATCH = "dr-canary-after-verify"  # histories recorded before the canary step skip it


@workflow.defn(name="DRFailoverWorkflow")
class DRFailoverWorkflow:
    def __init__(self) -> None:
        self._s = FailoverStatus(incident="")
        self._promoted: datetime | None = None
        self._approval: Approval | None = None
        self._visible = False

    @workflow.run
    async def run(self, inp: FailoverInput) -> FailoverStatus:
        s, wid = self._s, workflow.info().workflow_id
        s.incident, self._visible = inp.incident, inp.search_attributes
        detected = inp.detected_at or workflow.now()
        self._stage(Stage.ASSESSING)
        a = s.assessment = await retry_rules.execute(retry_rules.DR_PROBE, DrActivities.assess, wid)
        servers = RerouteRequest(workflow_id=wid, incident=inp.incident, providers=a.inference_down)
        if servers.providers and not a.database_failed:  # automatic: the breaker would do it anyway
            self._stage(Stage.REROUTING)
            s.rerouted = await retry_rules.execute(retry_rules.DR_ACT, DrActivities.reroute, servers)
        if a.database_failed or inp.planned or s.rerouted is None:
            await self._database(inp, a, detected)
            if servers.providers and s.stage in (Stage.FAILED_OVER, Stage.VERIFY_FAILED):
                # Both down: the breakers live in the database, so they are held on the new primary.
                s.stages.append((Stage.REROUTING.value, workflow.now()))
                s.rerouted = await retry_rules.execute(retry_rules.DR_ACT, DrActivities.reroute, servers)
        else:
            moved = ", ".join(f"{m.tier} -> {m.fallback or 'waits'}" for m in s.rerouted.moves)
            self._end(
                Stage.REROUTED, f"{', '.join(servers.providers)} down: {moved or 'no tier routes to it'}"
            )
            s.recovery = await self._record(inp, detected, Stage.REROUTED)
        if s.rerouted is not None and s.rerouted.held:
            held = servers.model_copy(update={"providers": s.rerouted.held})
            await self._restore_inference(inp, held, detected)
        return s

    async def _database(self, inp: FailoverInput, a: Assessment, detected: datetime) -> None:
        s, wid = self._s, workflow.info().workflow_id
        if refused := _refusal(a, inp):
            self._end(*refused)
            return
        old = StepRequest(workflow_id=wid, incident=inp.incident, url=a.primary.url)
        if not inp.automatic:
            if not await self._approved(inp, old):
                self._end(Stage.NOT_APPROVED, f"no approve_failover within {inp.approval_hours:g} h")
                return
            self._stage(Stage.ASSESSING)  # the sites may have changed while the approval was awaited
            a = s.assessment = await retry_rules.execute(retry_rules.DR_PROBE, DrActivities.assess, wid)
            if refused := _refusal(a, inp):
                self._end(*refused)
                return
        assert a.standby is not None  # _refusal: there is one to promote
        to = old.model_copy(update={"url": a.standby.url})

        self._stage(Stage.FENCING)
        await retry_rules.execute(retry_rules.DR_ACT, DrActivities.fence, old)
        try:  # from here on the old primary is down for good: a failure is handed to operations
            self._stage(Stage.PROMOTING)
            self._promoted = await retry_rules.execute(retry_rules.DR_ACT, DrActivities.promote, to)
            self._stage(Stage.SWITCHING)
            await retry_rules.execute(retry_rules.DR_ACT, DrActivities.switch, to)
            self._stage(Stage.VERIFYING)
            s.verified = await retry_rules.execute(retry_rules.DR_VERIFY, DrActivities.verify, to)
            if workflow.patched(CANARY_PATCH) and s.verified.ok:
                s.verified = await self._canary(inp, s.verified)
        except ActivityError as err:
            step = s.stage.value
            self._end(Stage.FAILOVER_FAILED, f"the old primary is fenced, {step} failed: "
                      f"{retry_rules.failure_message(err)}; operations finish it by hand")  # fmt: skip
            with contextlib.suppress(ActivityError):
                page = old.model_copy(update={"failed": s.reason})
                await retry_rules.execute(retry_rules.DR_PAGE, DrActivities.page, page)
            return
        outcome = Stage.FAILED_OVER if s.verified.ok else Stage.VERIFY_FAILED
        self._stage(outcome)
        s.recovery = await self._record(inp, detected, outcome)
        s.reason = (
            f"{a.standby.url} is the primary"
            if s.verified.ok
            else f"promoted, but not verified: {s.verified.reason}"
        )

    async def _canary(self, inp: FailoverInput, verified: Verified) -> Verified:
        """The platform canary (a child): every named queue's workers write through the new primary."""
        queues = inp.canary_queues or []
        try:
            out = await workflow.execute_child_workflow(
                PlatformCanaryWorkflow.run, CanaryInput(task_queues=queues, probe_timeout_seconds=30),
                id=f"{workflow_id(inp.incident)}-canary", execution_timeout=timedelta(minutes=3),
            )  # fmt: skip
            unreachable = dict(out.unreachable)
            unreachable.update({p.task_queue: p.error or "database or codec failed" for p in out.probes
                                if not (p.database_ok and p.codec_ok)})  # fmt: skip
        except ChildWorkflowError as err:
            unreachable = {"canary": str(err.cause or err)}
        update: dict[str, object] = {"canary_healthy": not unreachable, "canary_unreachable": unreachable}
        if unreachable:
            why = "; ".join(f"{q}: {e}" for q, e in sorted(unreachable.items()))
            update.update(ok=False, reason=f"platform canary: {why}")
        return verified.model_copy(update=update)

    async def _record(self, inp: FailoverInput, detected: datetime, outcome: Stage) -> list[FeatureRecovery]:
        s, a = self._s, self._s.assessment
        assert a is not None
        return await retry_rules.execute(
            retry_rules.DR_RECORD,
            DrActivities.record,
            RecordRequest(
                workflow_id=workflow.info().workflow_id, incident=inp.incident, requested_by=inp.requested_by,
                approved_by=s.approved_by, forced=inp.force, detected_at=detected, promoted_at=self._promoted,
                first_write_at=s.verified.first_write_at if s.verified else None, lag_bytes=a.lag_bytes,
                synchronous=a.synchronous, outcome=outcome.value, steps=list(s.stages),
                rerouted_at=s.rerouted.at if s.rerouted else None,
            ),
        )  # fmt: skip

    async def _restore_inference(
        self, inp: FailoverInput, servers: RerouteRequest, detected: datetime
    ) -> None:
        """Wait for the rerouted servers to answer again, then release their breakers (released too when
        they never answer: the gateway's own breaker then keeps their tiers on the fallback)."""
        s = self._s
        assert s.rerouted is not None
        inference_only = s.stage is Stage.REROUTED
        wait = retry_rules.dr_inference_wait(timedelta(hours=inp.inference_wait_hours))
        try:
            s.rerouted.restored_at = await retry_rules.execute(wait, DrActivities.await_inference, servers)
        except ActivityError:
            pass
        await retry_rules.execute(retry_rules.DR_ACT, DrActivities.release, servers)
        back = s.rerouted.restored_at is not None
        if inference_only:
            if back:
                self._end(
                    Stage.INFERENCE_RESTORED, f"{', '.join(servers.providers)} answer again: tiers back"
                )
            else:
                s.reason = (
                    f"{', '.join(servers.providers)} still down after {inp.inference_wait_hours:g} h: "
                    "released to the gateway's breaker, which keeps the tiers on their fallback"
                )
        else:
            s.stages.append(
                (Stage.INFERENCE_RESTORED.value if back else "inference-released", workflow.now())
            )
        if inference_only or s.stage in (Stage.FAILED_OVER, Stage.VERIFY_FAILED):  # a database to write
            await self._record(inp, detected, s.stage)

    async def _approved(self, inp: FailoverInput, page: StepRequest) -> bool:
        """An operator's approval; the next on-call tier is paged when it is slow to come."""
        self._stage(Stage.AWAITING_APPROVAL)
        escalate = timedelta(minutes=inp.escalate_minutes)
        deadline = timedelta(hours=inp.approval_hours)
        try:
            await workflow.wait_condition(lambda: self._approval is not None, timeout=min(escalate, deadline))
            return True
        except TimeoutError:
            if escalate >= deadline:
                return False
        self._s.escalated = True
        paging = workflow.start_activity_method(DrActivities.page, page, **retry_rules.DR_RECORD.options())
        try:
            await workflow.wait_condition(lambda: self._approval is not None, timeout=deadline - escalate)
            return True
        except TimeoutError:
            return False
        finally:
            if not paging.done():
                paging.cancel()

    @workflow.update(name="approve_failover")
    def approve_failover(self, approval: Approval) -> FailoverStatus:
        self._approval = approval
        self._s.approved_by = approval.by
        self._s.stages.append(("approved", workflow.now()))
        return self._s

    @approve_failover.validator
    def _check_approval(self, approval: Approval) -> None:
        if self._s.stage is not Stage.AWAITING_APPROVAL:
            raise ValueError(f"no approval is awaited: the failover is {self._s.stage.value}")

    @workflow.query(name="status")
    def status(self) -> FailoverStatus:
        return self._s

    def _end(self, stage: Stage, reason: str) -> FailoverStatus:
        self._s.reason = reason
        self._stage(stage)
        return self._s

    def _stage(self, stage: Stage) -> None:
        self._s.stage = stage
        self._s.stages.append((stage.value, workflow.now()))
        if self._visible:
            workflow.upsert_search_attributes(sa.updates(stage.value, pipeline=PIPELINE))


def _refusal(a: Assessment, inp: FailoverInput) -> tuple[Stage, str] | None:
    """Why this assessment must not lead to a database failover (None: it may)."""
    if not a.database_failed and not inp.planned:
        return Stage.NOTHING_FAILED, f"the primary {a.primary.url} answers as the primary"
    standby = a.standby
    if standby is None:
        return Stage.REFUSED, "nothing to promote: no standby configured"
    if not standby.up or not standby.in_recovery:
        state = "unreachable" if not standby.up else "not in recovery (already a primary?)"
        return Stage.REFUSED, f"nothing to promote: the standby {standby.url} is {state}"
    if inp.force:
        return None
    if a.lag_bytes is not None and a.lag_bytes > inp.max_lag_bytes:
        return Stage.REFUSED, (
            f"the standby lags {a.lag_bytes} bytes, beyond the RPO guard of {inp.max_lag_bytes}: "
            "promoting it would lose committed work (force to accept, audited)"
        )
    if not a.primary.up and not a.synchronous:
        heard = f"{a.standby_heard_s:.1f} s ago" if a.standby_heard_s is not None else "at an unknown time"
        return Stage.REFUSED, (
            f"asynchronous replication and the primary down: what it committed after the standby last heard "
            f"from it ({heard}) cannot be known; force to accept that loss (audited)"
        )
    return None

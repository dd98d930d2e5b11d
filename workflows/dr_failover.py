"""`DRFailoverWorkflow` (seed P20), one per incident (`dr-failover-<incident>`): assess what failed
(or, `planned`, switch over from a primary that still answers); refuse a standby that cannot take
over: absent, lagging beyond the RPO guard, or asynchronous with the primary gone (its last commits
unknowable), unless forced; wait for an operator's `approve_failover` when not automatic (paging the
next on-call tier on a timer) and assess again after it; then fence the old primary, promote the
standby, move every process to it, verify a write and the audit chain there, and record the measured
RTO and RPO per feature.  A failure after the fence ends in `failover-failed` with operations paged.

Split brain is the outcome to avoid above all: the old primary is fenced before the standby is
promoted, and a fenced cluster refuses to start.  Every step's time is kept here and written to the
new primary's audit trail by `record` (the failing database could not hold it)."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.dr import DrActivities
    from careflow.models.dr import (
        PIPELINE,
        Approval,
        Assessment,
        FailoverInput,
        FailoverStatus,
        RecordRequest,
        StepRequest,
    )
    from careflow.models.dr import FailoverStage as Stage
    from workflows import retry_rules
    from workflows import search_attributes as sa


@workflow.defn(name="DRFailoverWorkflow")
class DRFailoverWorkflow:
    def __init__(self) -> None:
        self._s = FailoverStatus(incident="")
        self._approval: Approval | None = None
        self._visible = False

    @workflow.run
    async def run(self, inp: FailoverInput) -> FailoverStatus:
        s, wid = self._s, workflow.info().workflow_id
        s.incident, self._visible = inp.incident, inp.search_attributes
        detected = inp.detected_at or workflow.now()
        self._stage(Stage.ASSESSING)
        a = s.assessment = await retry_rules.execute(retry_rules.DR_PROBE, DrActivities.assess, wid)
        if refused := _refusal(a, inp):
            return self._end(*refused)
        old = StepRequest(workflow_id=wid, incident=inp.incident, url=a.primary.url)
        if not inp.automatic:
            if not await self._approved(inp, old):
                return self._end(Stage.NOT_APPROVED, f"no approve_failover within {inp.approval_hours:g} h")
            self._stage(Stage.ASSESSING)  # the sites may have changed while the approval was awaited
            a = s.assessment = await retry_rules.execute(retry_rules.DR_PROBE, DrActivities.assess, wid)
            if refused := _refusal(a, inp):
                return self._end(*refused)
        assert a.standby is not None  # _refusal: there is one to promote
        to = old.model_copy(update={"url": a.standby.url})

        self._stage(Stage.FENCING)
        await retry_rules.execute(retry_rules.DR_ACT, DrActivities.fence, old)
        try:  # from here on the old primary is down for good: a failure is handed to operations
            self._stage(Stage.PROMOTING)
            promoted = await retry_rules.execute(retry_rules.DR_ACT, DrActivities.promote, to)
            self._stage(Stage.SWITCHING)
            await retry_rules.execute(retry_rules.DR_ACT, DrActivities.switch, to)
            self._stage(Stage.VERIFYING)
            s.verified = await retry_rules.execute(retry_rules.DR_VERIFY, DrActivities.verify, to)
        except ActivityError as err:
            step = s.stage.value
            self._end(Stage.FAILOVER_FAILED, f"the old primary is fenced, {step} failed: "
                      f"{retry_rules.failure_message(err)}; operations finish it by hand")  # fmt: skip
            with contextlib.suppress(ActivityError):
                await retry_rules.execute(retry_rules.DR_PAGE, DrActivities.page, old)
            return s
        outcome = Stage.FAILED_OVER if s.verified.ok else Stage.VERIFY_FAILED
        self._stage(outcome)
        s.recovery = await retry_rules.execute(
            retry_rules.DR_RECORD,
            DrActivities.record,
            RecordRequest(
                workflow_id=wid, incident=inp.incident, requested_by=inp.requested_by,
                approved_by=s.approved_by, forced=inp.force, detected_at=detected, promoted_at=promoted,
                first_write_at=s.verified.first_write_at, lag_bytes=a.lag_bytes, synchronous=a.synchronous,
                outcome=outcome.value, steps=list(s.stages),
            ),
        )  # fmt: skip
        s.reason = (
            f"{a.standby.url} is the primary"
            if s.verified.ok
            else f"promoted, but not verified: {s.verified.reason}"
        )
        return s

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
    """Why this assessment must not lead to a failover (None: it may)."""
    if a.failed == "nothing" and not inp.planned:
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

"""`DRMonitorWorkflow` (seed P20): the health monitor.  One run watches for `watch_minutes` (one
heartbeating `dr.watch`: probes every few seconds, no history per probe) and ends; the
`dr-health-monitor` Schedule starts the next as soon as it does.  On an alarm it starts the failover,
`dr-failover-auto-<what>-<first failed probe>` (a child that outlives it), with the RTO measured from
that probe: for the database it waits for the failover's end, and after one that did not fail over
(refused, not approved) it stays quiet for `cooldown_minutes` so the next run does not ask again at
once; an inference failover holds the server's breakers, which the next run's probes leave alone."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.dr import DrActivities
    from careflow.models.dr import PIPELINE, FailoverInput, FailoverStage, workflow_id
    from careflow.models.dr_monitor import REQUESTED_BY, MonitorInput, MonitorResult, WatchRequest
    from workflows import retry_rules
    from workflows import search_attributes as sa
    from workflows.dr_failover import DRFailoverWorkflow


@workflow.defn(name="DRMonitorWorkflow")
class DRMonitorWorkflow:
    def __init__(self) -> None:
        self._result = MonitorResult(outcome="healthy")

    @workflow.run
    async def run(self, inp: MonitorInput) -> MonitorResult:
        wid = workflow.info().workflow_id
        self._stage("watching", inp)
        watch = WatchRequest(
            workflow_id=wid, watch_s=inp.watch_minutes * 60, failover_after_s=inp.failover_after_s,
            probe_every_s=inp.probe_every_s,
        )  # fmt: skip
        alarm = await retry_rules.execute(
            retry_rules.dr_watch(timedelta(minutes=inp.watch_minutes)), DrActivities.watch, watch
        )
        r = self._result
        if alarm is None:
            return r
        r.alarm = alarm
        r.incident = f"auto-{alarm.failed}-{alarm.since:%Y%m%dt%H%M%S}"
        self._stage("failing-over", inp)
        failover = await workflow.start_child_workflow(
            DRFailoverWorkflow.run,
            FailoverInput(
                incident=r.incident, requested_by=REQUESTED_BY, reason=alarm.reason, detected_at=alarm.since,
                automatic=alarm.automatic, search_attributes=inp.search_attributes,
                canary_queues=inp.canary_queues,
            ),
            id=workflow_id(r.incident), parent_close_policy=ParentClosePolicy.ABANDON,
        )  # fmt: skip
        if alarm.failed == "inference":
            r.outcome = "failover-started"
            return r
        ended = await failover
        r.failover_stage = ended.stage.value
        r.outcome = "failed-over" if ended.stage is FailoverStage.FAILED_OVER else "failover-ended"
        if r.outcome != "failed-over" and inp.cooldown_minutes > 0:
            self._stage("cooling-down", inp)
            await workflow.sleep(timedelta(minutes=inp.cooldown_minutes))
        return r

    @workflow.query(name="status")
    def status(self) -> MonitorResult:
        return self._result

    def _stage(self, stage: str, inp: MonitorInput) -> None:
        if inp.search_attributes:
            workflow.upsert_search_attributes(sa.updates(stage, pipeline=PIPELINE))

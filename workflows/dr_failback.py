"""`DRFailbackWorkflow` (seed P20), one per incident (`dr-failback-<incident>`): after a failover the old
primary is fenced and the new one runs without a standby.  The failback rebuilds the fenced site as a
standby of the new primary (its data cloned anew: whatever it held after the standby's last receipt is
not trusted), then waits for an operator's `return_to_site` (or returns at once, `return_now`): a planned
switchover back (a child `DRFailoverWorkflow`, `<incident>-return`), after which the site it left is
rebuilt as the standby in turn.  No `return_to_site` within `wait_hours`: the roles stay as they are,
with a standby again (`rebuilt`)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.dr import DrActivities
    from careflow.models.dr import PIPELINE, Approval, FailoverInput, FailoverStage, workflow_id
    from careflow.models.dr_failback import FailbackInput, FailbackStatus, RebuildRequest, Rebuilt
    from workflows import retry_rules
    from workflows import search_attributes as sa
    from workflows.dr_failover import DRFailoverWorkflow


@workflow.defn(name="DRFailbackWorkflow")
class DRFailbackWorkflow:
    def __init__(self) -> None:
        self._s = FailbackStatus(incident="")
        self._return: Approval | None = None
        self._visible = False

    @workflow.run
    async def run(self, inp: FailbackInput) -> FailbackStatus:
        s, wid = self._s, workflow.info().workflow_id
        s.incident, self._visible = inp.incident, inp.search_attributes
        self._stage("assessing")
        a = await retry_rules.execute(retry_rules.DR_PROBE, DrActivities.assess, wid)
        s.primary = a.primary
        if a.database_failed or a.standby is None:
            why = (
                "no second site is configured"
                if a.standby is None
                else f"the primary {a.primary.url} is down"
            )
            return self._end("refused", f"nothing to fail back: {why}")
        try:
            self._stage("rebuilding")
            s.rebuilt.append(await self._rebuild(wid, inp, a.primary.url, a.standby.url))
            if not inp.return_now:
                self._stage("standing-by")
                try:
                    await workflow.wait_condition(
                        lambda: self._return is not None, timeout=timedelta(hours=inp.wait_hours)
                    )
                except TimeoutError:
                    return self._end(
                        "rebuilt", f"{a.standby.url} streams from {a.primary.url}; no return asked"
                    )
            self._stage("switching-back")
            back = f"{inp.incident}-return"
            moved = await workflow.execute_child_workflow(
                DRFailoverWorkflow.run,
                FailoverInput(
                    incident=back, requested_by=s.returned_by or inp.requested_by, reason="failback",
                    planned=True, automatic=True, search_attributes=inp.search_attributes,
                    canary_queues=inp.canary_queues,
                ),
                id=workflow_id(back),
            )  # fmt: skip
            if moved.stage is not FailoverStage.FAILED_OVER:
                return self._end(
                    "return-failed", f"the switchover back ended {moved.stage.value}: {moved.reason}"
                )
            self._stage("rebuilding")
            s.rebuilt.append(await self._rebuild(wid, inp, a.standby.url, a.primary.url))
        except ActivityError as err:
            return self._end("rebuild-failed", retry_rules.failure_message(err))
        except ChildWorkflowError as err:
            return self._end("return-failed", f"the switchover back failed: {err.cause or err}")
        return self._end("returned", f"{a.standby.url} is the primary again, {a.primary.url} its standby")

    async def _rebuild(self, wid: str, inp: FailbackInput, primary: str, standby: str) -> Rebuilt:
        req = RebuildRequest(
            workflow_id=wid, incident=inp.incident, primary_url=primary, standby_url=standby,
            synchronous=inp.synchronous,
        )  # fmt: skip
        return await retry_rules.execute(retry_rules.DR_REBUILD, DrActivities.rebuild, req)

    @workflow.update(name="return_to_site")
    def return_to_site(self, approval: Approval) -> FailbackStatus:
        self._return = approval
        self._s.returned_by = approval.by
        return self._s

    @return_to_site.validator
    def _check_return(self, approval: Approval) -> None:
        if self._s.stage != "standing-by":
            raise ValueError(f"no return is awaited: the failback is {self._s.stage}")

    @workflow.query(name="status")
    def status(self) -> FailbackStatus:
        return self._s

    def _end(self, stage: str, reason: str) -> FailbackStatus:
        self._s.reason = reason
        self._stage(stage)
        return self._s

    def _stage(self, stage: str) -> None:
        self._s.stage = stage
        self._s.stages.append((stage, workflow.now()))
        if self._visible:
            workflow.upsert_search_attributes(sa.updates(stage, pipeline=PIPELINE))

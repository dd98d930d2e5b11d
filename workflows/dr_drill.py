"""`DRDrillWorkflow` (seed P20): a restore drill, monthly (the `dr-drill-monthly` Schedule) or now
(`careflow dr drill`).  A marker is written on the live primary and its WAL shipped (a child
`BackupWorkflow`, kind wal), then the chosen backup is restored into a scratch cluster at the point asked
for, checked (every object's SHA-256, pg_verifybackup, row counts, the audit hash chain, the golden RAG
questions) and destroyed; the drill is recorded against the objectives.  A check that fails names itself:
`failed_check` is plan, checksum, restore or verify, and operations are told.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.dr_drill import DrillActivities
    from careflow.models.dr import PIPELINE
    from careflow.models.dr_backup import BACKUP_ID_PREFIX, BackupInput
    from careflow.models.dr_drill import DrillInput, DrillResult, PlanRequest
    from workflows import retry_rules
    from workflows import search_attributes as sa
    from workflows.dr_backup import BackupWorkflow
    from workflows.retry_rules import DR_BACKUP_STEP, DR_DRILL_RESTORE

_FAILED_CHECK = {
    "NoBackup": "plan",
    "ChecksumMismatch": "checksum",
    "MissingObject": "missing-object",
    "RestoreFailed": "restore",
}


@workflow.defn(name="DRDrillWorkflow")
class DRDrillWorkflow:
    def __init__(self) -> None:
        self._r = DrillResult(drill_id="")
        self._visible = False

    @workflow.run
    async def run(self, inp: DrillInput) -> DrillResult:
        r, wid = self._r, workflow.info().workflow_id
        r.drill_id, r.requested_by, self._visible = wid, inp.requested_by, inp.search_attributes
        req = PlanRequest(drill_id=wid, requested_by=inp.requested_by, backup_id=inp.backup_id, at=inp.at)
        try:
            self._stage("planning")
            r.plan = await retry_rules.execute(DR_BACKUP_STEP, DrillActivities.plan, req)
            self._stage("shipping-wal")
            shipped = await workflow.execute_child_workflow(
                BackupWorkflow.run,
                BackupInput(kind="wal", requested_by="dr-drill", search_attributes=inp.search_attributes),
                id=f"{BACKUP_ID_PREFIX}wal-{workflow.uuid4().hex[:12]}",  # its parent links it to the drill
            )
            if shipped.outcome != "complete":  # the copy could not be recent: not a drill that passes
                r.outcome, r.failed_check, r.reason = "failed", "shipping-wal", shipped.reason
                return await self._record()
            self._stage("restoring")
            r.checks = await retry_rules.execute(DR_DRILL_RESTORE, DrillActivities.restore_and_check, r.plan)
            r.outcome = "failed" if r.checks.failures else "passed"
            r.failed_check = "verify" if r.checks.failures else ""
            r.reason = "; ".join(r.checks.failures)
        except (ActivityError, ChildWorkflowError) as err:
            kind = retry_rules.failure_type(err) if isinstance(err, ActivityError) else None
            r.outcome, r.failed_check = "failed", _FAILED_CHECK.get(kind or "", r.stage)
            r.reason = retry_rules.failure_message(err) if isinstance(err, ActivityError) else str(err)
        return await self._record()

    async def _record(self) -> DrillResult:
        r = self._r
        self._stage("recording")
        r.objectives = await retry_rules.execute(DR_BACKUP_STEP, DrillActivities.record, r)
        self._stage(r.outcome)
        return r

    @workflow.query(name="progress")
    def progress(self) -> DrillResult:
        return self._r

    def _stage(self, stage: str) -> None:
        self._r.stage = stage
        if self._visible:
            workflow.upsert_search_attributes(sa.updates(stage, pipeline=PIPELINE))

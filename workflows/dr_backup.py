"""`BackupWorkflow` (seed P20): a full backup (nightly Schedule, or `careflow dr backup` now) or a WAL
shipment (a Schedule every few minutes): catalogue the run, take a base backup of the active primary,
ship the archived WAL, copy model artifacts, knowledge-base sources and the Temporal dev server's
database, write the manifest, then apply retention.

Nothing earlier is touched until the new backup is complete: retention runs last, and a run that fails
(a store without room, a budget spent) deletes only its own objects, ends `failed` with the step and
the reason, and tells operations.  `progress` (a query) and the activities' heartbeats show where it is.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.dr_backup import BackupActivities
    from careflow.models.dr import PIPELINE
    from careflow.models.dr_backup import (
        BackupInput,
        BackupRef,
        BackupResult,
        FailRequest,
        FinishRequest,
        Stored,
    )
    from workflows import retry_rules
    from workflows import search_attributes as sa
    from workflows.retry_rules import DR_BACKUP_COPY, DR_BACKUP_STEP


@workflow.defn(name="BackupWorkflow")
class BackupWorkflow:
    def __init__(self) -> None:
        self._r = BackupResult(backup_id="", kind="full")
        self._visible = False

    @workflow.run
    async def run(self, inp: BackupInput) -> BackupResult:
        r, wid = self._r, workflow.info().workflow_id
        r.backup_id, r.kind, self._visible = wid, inp.kind, inp.search_attributes
        ref = BackupRef(backup_id=wid, kind=inp.kind, requested_by=inp.requested_by)
        self._stage("starting")
        r.store = await retry_rules.execute(DR_BACKUP_STEP, BackupActivities.begin, ref)
        try:
            if inp.kind == "full":
                self._stage("base-backup")
                r.base = await retry_rules.execute(DR_BACKUP_COPY, BackupActivities.base, wid)
            self._stage("shipping-wal")
            self._add(await retry_rules.execute(DR_BACKUP_COPY, BackupActivities.wal, wid))
            if inp.kind == "full":
                self._stage("copying-files")
                self._add(await retry_rules.execute(DR_BACKUP_COPY, BackupActivities.files, wid))
            self._stage("cataloguing")
            done = await retry_rules.execute(
                DR_BACKUP_STEP, BackupActivities.finish, FinishRequest(ref=ref, base=r.base)
            )
        except ActivityError as err:
            r.reason = f"{r.stage}: {retry_rules.failure_message(err)}"
            await retry_rules.execute(
                DR_BACKUP_STEP, BackupActivities.fail, FailRequest(backup_id=wid, error=r.reason)
            )
            r.outcome = "failed"
            self._stage("failed")
            return r
        r.objects, r.bytes = done.objects, done.bytes
        if inp.kind == "full":
            self._stage("pruning")
            r.pruned = await retry_rules.execute(DR_BACKUP_STEP, BackupActivities.prune, inp.keep or 0)
        r.outcome = "complete"
        self._stage("complete")
        return r

    @workflow.query(name="progress")
    def progress(self) -> BackupResult:
        return self._r

    def _add(self, stored: Stored) -> None:
        self._r.skipped += stored.skipped

    def _stage(self, stage: str) -> None:
        self._r.stage = stage
        if self._visible:
            workflow.upsert_search_attributes(sa.updates(stage, pipeline=PIPELINE))

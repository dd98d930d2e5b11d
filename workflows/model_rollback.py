"""`ModelRollbackWorkflow` (id `model-rollback-<feature>-<version>`): a promoted champion taken back one
step after its saga ended (`careflow model rollback --feature F`): the version before it answers the
next request (the routing row), the registry's champion alias goes back to it and the version is
marked rejected, operations are told.  A second request for the same version attaches to this one.
A candidate still in its saga is rolled back through the saga's own `rollback` update instead."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.model_promotion import PromotionActivities
    from careflow.models.model_promotion import RestoreInput, RestoreRequest, RestoreResult
    from workflows import retry_rules
    from workflows.golden_evaluation import alert_operations


@workflow.defn(name="ModelRollbackWorkflow")
class ModelRollbackWorkflow:
    @workflow.run
    async def run(self, inp: RestoreInput) -> RestoreResult:
        wid = workflow.info().workflow_id
        try:
            restored: RestoreResult = await retry_rules.execute(
                retry_rules.MODEL_RESTORE,
                PromotionActivities.restore,
                RestoreRequest(workflow_id=wid, **inp.model_dump()),
            )
        except ActivityError as err:
            if retry_rules.failure_type(err) != "RollbackRefused":
                raise
            return RestoreResult(
                feature=inp.feature,
                version=inp.version,
                outcome="refused",
                reason=retry_rules.failure_message(err),
            )
        back = restored.back_to or "the base"
        await alert_operations(
            inp.feature,
            inp.version,
            "rolled-back",
            f"by {inp.by} after promotion: {inp.reason}; {back} serves",
        )
        return restored

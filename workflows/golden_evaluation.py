"""`GoldenEvaluationWorkflow` (seed P5, layer 3): one golden-query run of a feature's version against the
serving champion's baseline.  Every deployment step of the promotion saga starts one as a child; the
`golden-evaluation-daily-<feature>` Schedule and `careflow model golden` start one on their own, and then
a regression alerts operations (the saga's gate alerts with its rollback instead)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.model_promotion import ModelActivities, PromotionActivities
    from careflow.models.model_promotion import AlertRequest, GoldenInput, GoldenRequest, GoldenResult
    from workflows import retry_rules


@workflow.defn(name="GoldenEvaluationWorkflow")
class GoldenEvaluationWorkflow:
    @workflow.run
    async def run(self, inp: GoldenInput) -> GoldenResult:
        wid = workflow.info().workflow_id
        result = await retry_rules.execute(
            retry_rules.MODEL_GOLDEN,
            ModelActivities.golden,
            GoldenRequest(feature=inp.feature, version=inp.version, key=f"{wid}/golden", trigger=inp.trigger),
            task_queue=inp.model_queue,
        )
        if result.regressed and not inp.started_by:  # a saga's own gate alerts with its rollback
            reason = f"golden {result.score:.3f}, {result.drop:.0%} under baseline {result.baseline}"
            await alert_operations(inp.feature, result.version, "golden-regressed", reason)
        return result


async def alert_operations(
    feature: str, version: str, outcome: str, reason: str, step: str = "alert"
) -> None:
    """How every model workflow tells operations of a failed gate or a rollback (once per workflow step)."""
    await retry_rules.execute(
        retry_rules.MODEL_STEP,
        PromotionActivities.alert,
        AlertRequest(
            workflow_id=workflow.info().workflow_id,
            step=step,
            feature=feature,
            version=version,
            outcome=outcome,
            reason=reason,
        ),
    )

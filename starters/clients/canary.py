"""Run the platform canary across careflow's task queues and wait for its report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import TimeoutError as TimeoutError_

from careflow.models.platform import WORKFLOW_ID_PREFIX, CanaryInput, CanaryOutput
from workers import pipelines
from workflows.platform_canary import PlatformCanaryWorkflow


async def run_canary(
    client: Client,
    queues: list[str] | None = None,
    *,
    probe_timeout: float = 20.0,
    workflow_id: str | None = None,
) -> CanaryOutput:
    queues = list(queues or pipelines.task_queues())
    # The canary workflow runs where its pipeline's workflows run (careflow-main, unless only other queues
    # are probed); it needs a worker there to run at all.
    home = pipelines.CANARY.task_queue if pipelines.CANARY.task_queue in queues else queues[0]
    wid = workflow_id or f"{WORKFLOW_ID_PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    limit = timedelta(seconds=probe_timeout * 3 + 30)
    try:
        return await client.execute_workflow(
            PlatformCanaryWorkflow.run,
            CanaryInput(task_queues=queues, probe_timeout_seconds=probe_timeout),
            id=wid,
            task_queue=home,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            execution_timeout=limit,
        )
    except WorkflowFailureError as exc:  # timed out: nothing ran it (or it failed) - a report, not a crash
        why = "no worker ran the canary" if isinstance(exc.cause, TimeoutError_) else str(exc.cause or exc)
        return CanaryOutput(
            healthy=False,
            unreachable={home: f"{why} within {limit.total_seconds():.0f} s (workflow {wid})"},
        )

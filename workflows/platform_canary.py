"""PlatformCanaryWorkflow: one probe activity on each task queue careflow uses.

Used by `careflow dev status` as its end-to-end check and, later, by DR failover as a health check.
A queue whose probe cannot be scheduled or fails is reported unreachable; the canary itself never
fails because a queue is down: it reports.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.platform import PlatformActivities
    from careflow.models.platform import CanaryInput, CanaryOutput, ProbeInput, ProbeResult

PROBE_RETRY = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=1))


@workflow.defn(name="PlatformCanaryWorkflow")
class PlatformCanaryWorkflow:
    @workflow.run
    async def run(self, inp: CanaryInput) -> CanaryOutput:
        queues = inp.task_queues or [workflow.info().task_queue]
        timeout = timedelta(seconds=inp.probe_timeout_seconds)
        results = await asyncio.gather(*(self._probe(q, timeout) for q in queues), return_exceptions=True)
        out = CanaryOutput(healthy=True)
        for queue, res in zip(queues, results, strict=True):
            if isinstance(res, ProbeResult):
                out.probes.append(res)
                out.healthy &= res.database_ok and res.codec_ok
            else:
                cause = res.cause if isinstance(res, ActivityError) and res.cause else res
                out.unreachable[queue] = f"{type(cause).__name__}: {cause}"
                out.healthy = False
        return out

    async def _probe(self, queue: str, timeout: timedelta) -> ProbeResult:
        return await workflow.execute_activity_method(
            PlatformActivities.probe,
            ProbeInput(task_queue=queue, probe_key=f"{workflow.info().workflow_id}:{queue}"),
            task_queue=queue,
            # No worker on the queue shows up as a schedule-to-start timeout, not an endless wait.
            schedule_to_start_timeout=timeout,
            start_to_close_timeout=timeout,
            retry_policy=PROBE_RETRY,
        )

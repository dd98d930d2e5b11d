"""Starting restore drills (seed P20): `careflow dr drill` now, and the monthly Schedule `dev up` keeps.
Shared by the CLI, the tests and the bench."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)

from careflow import task_queues
from careflow.models.dr import PIPELINE
from careflow.models.dr_drill import DRILL_CRON, DRILL_ID_PREFIX, DRILL_SCHEDULE_ID, DrillInput, DrillResult
from starters.clients import stages
from workflows import search_attributes as sa
from workflows.dr_drill import DRDrillWorkflow


async def start(client: Client, inp: DrillInput, task_queue: str = task_queues.MAIN) -> str:
    wid = f"{DRILL_ID_PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    await client.start_workflow(
        DRDrillWorkflow.run, inp, id=wid, task_queue=task_queue,
        search_attributes=sa.at_start(PIPELINE, "planning", "default") if inp.search_attributes else None,
    )  # fmt: skip
    return wid


async def follow(client: Client, wid: str, on_stage: Callable[[DrillResult], None]) -> DrillResult:
    handle = client.get_workflow_handle_for(DRDrillWorkflow.run, wid)
    return await stages.follow(handle, DRDrillWorkflow.progress, on_stage)


def schedules(task_queue: str = task_queues.MAIN) -> dict[str, Schedule]:
    return {
        DRILL_SCHEDULE_ID: Schedule(
            action=ScheduleActionStartWorkflow(
                DRDrillWorkflow.run, DrillInput(), id=DRILL_ID_PREFIX + "monthly", task_queue=task_queue,
                typed_search_attributes=sa.at_start(PIPELINE, "planning", "default"),
            ),
            spec=ScheduleSpec(cron_expressions=[DRILL_CRON]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            state=ScheduleState(note="careflow monthly restore drill: the newest backup, a scratch cluster"),
        )
    }  # fmt: skip

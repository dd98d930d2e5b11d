"""One way to put a Temporal Schedule in place: create it, or bring an existing one to this definition
(a changed cron or input takes effect without deleting the Schedule's history; an operator's pause
stands)."""

from __future__ import annotations

import dataclasses

from temporalio.client import (
    Client,
    Schedule,
    ScheduleAlreadyRunningError,
    ScheduleUpdate,
    ScheduleUpdateInput,
)


async def put_schedule(client: Client, schedule_id: str, schedule: Schedule) -> bool:
    """True: created; False: an existing Schedule was updated in place."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def replace(current: ScheduleUpdateInput) -> ScheduleUpdate:
            paused = current.description.schedule.state.paused
            state = dataclasses.replace(schedule.state, paused=paused)
            return ScheduleUpdate(schedule=dataclasses.replace(schedule, state=state))

        await client.get_schedule_handle(schedule_id).update(replace)
        return False
    return True

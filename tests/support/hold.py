"""A test workflow whose one activity holds for a while, so a test can kill or stop its worker."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy


class HoldInput(BaseModel):
    seconds: float
    marker_dir: str


class HoldResult(BaseModel):
    pid: int
    attempt: int
    started: float  # time.time() when the activity began and ended
    ended: float


@activity.defn(name="test.hold")
async def hold(inp: HoldInput) -> HoldResult:
    info = activity.info()
    started = time.time()
    Path(inp.marker_dir, f"started-{info.attempt}-{os.getpid()}").touch()
    loop = asyncio.get_running_loop()
    end = loop.time() + inp.seconds
    while loop.time() < end:
        activity.heartbeat()
        await asyncio.sleep(0.2)
    return HoldResult(pid=os.getpid(), attempt=info.attempt, started=started, ended=time.time())


@workflow.defn(name="HoldWorkflow")
class HoldWorkflow:
    @workflow.run
    async def run(self, inp: HoldInput) -> HoldResult:
        return await workflow.execute_activity(
            hold,
            inp,
            start_to_close_timeout=timedelta(seconds=120),
            # A killed worker stops heartbeating: another worker retries after this.
            heartbeat_timeout=timedelta(seconds=2),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5),
        )

"""The benchmark's workflow: N sequential no-op activities, so orchestration cost is all there is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow


@dataclass
class BenchInput:
    activities: int
    # a small clinical-sized payload (ids + a short note), so the converter and codec do real work
    note: str = "x" * 512


@dataclass
class BenchOutput:
    activities_run: int


@activity.defn(name="bench.noop")
async def noop(inp: BenchInput) -> BenchOutput:
    return BenchOutput(activities_run=1)


@workflow.defn(name="BenchWorkflow")
class BenchWorkflow:
    @workflow.run
    async def run(self, inp: BenchInput) -> BenchOutput:
        for _ in range(inp.activities):
            await workflow.execute_activity(noop, inp, start_to_close_timeout=timedelta(seconds=30))
        return BenchOutput(activities_run=inp.activities)

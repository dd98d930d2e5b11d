"""Starting backups (seed P20): `careflow dr backup` now, and the two Schedules `dev up` keeps: a nightly
full backup and WAL shipping every few minutes.  Shared by the CLI, the tests and the bench."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)

from careflow import task_queues
from careflow.models.dr import PIPELINE
from careflow.models.dr_backup import (
    BACKUP_ID_PREFIX,
    NIGHTLY_CRON,
    NIGHTLY_SCHEDULE_ID,
    WAL_EVERY_MINUTES,
    WAL_SCHEDULE_ID,
    BackupInput,
    BackupResult,
)
from starters.clients import stages
from workflows import search_attributes as sa
from workflows.dr_backup import BackupWorkflow


def backup_id(kind: str, at: datetime) -> str:
    return f"{BACKUP_ID_PREFIX}{kind}-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


async def start(client: Client, inp: BackupInput, task_queue: str = task_queues.MAIN) -> str:
    wid = backup_id(inp.kind, datetime.now(UTC))
    await client.start_workflow(
        BackupWorkflow.run, inp, id=wid, task_queue=task_queue,
        search_attributes=sa.at_start(PIPELINE, "starting", "default") if inp.search_attributes else None,
    )  # fmt: skip
    return wid


async def follow(client: Client, wid: str, on_stage: Callable[[BackupResult], None]) -> BackupResult:
    handle = client.get_workflow_handle_for(BackupWorkflow.run, wid)
    return await stages.follow(handle, BackupWorkflow.progress, on_stage)


def _schedule(inp: BackupInput, spec: ScheduleSpec, note: str, task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            BackupWorkflow.run, inp, id=f"{BACKUP_ID_PREFIX}{inp.kind}",  # the Schedule appends the time
            task_queue=task_queue, typed_search_attributes=sa.at_start(PIPELINE, "starting", "default"),
        ),
        spec=spec,
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note=note),
    )  # fmt: skip


def schedules(task_queue: str = task_queues.MAIN) -> dict[str, Schedule]:
    return {
        NIGHTLY_SCHEDULE_ID: _schedule(
            BackupInput(kind="full"), ScheduleSpec(cron_expressions=[NIGHTLY_CRON]),
            "careflow nightly full backup: Postgres, WAL, models, KB sources, Temporal (P20)", task_queue,
        ),
        WAL_SCHEDULE_ID: _schedule(
            BackupInput(kind="wal"),
            ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=WAL_EVERY_MINUTES))]),
            "careflow WAL shipping into the backup store: point-in-time recovery (seed P20)", task_queue,
        ),
    }  # fmt: skip

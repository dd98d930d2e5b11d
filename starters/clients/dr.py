"""Starting and steering a DR failover (seed P20): shared by the CLI, the demo, the bench and the tests."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
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
from temporalio.service import RPCError

from careflow import task_queues
from careflow.models.dr import PIPELINE, Approval, FailoverInput, FailoverStage, FailoverStatus, workflow_id
from careflow.models.dr_failback import FailbackInput, FailbackStatus, failback_id
from careflow.models.dr_monitor import MONITOR_ID, MONITOR_SCHEDULE_ID, MonitorInput
from starters.clients import stages
from starters.clients.keyed_start import Started, start_keyed
from starters.clients.updates import execute_audited
from workflows import search_attributes as sa
from workflows.dr_failback import DRFailbackWorkflow
from workflows.dr_failover import DRFailoverWorkflow
from workflows.dr_monitor import DRMonitorWorkflow


def careflow_queues() -> list[str]:
    """Every queue careflow's workers poll: the platform canary after a failover probes each."""
    from workers import pipelines  # not at import: the pipelines' declarations import this module

    return pipelines.task_queues()


async def start(client: Client, inp: FailoverInput, task_queue: str = task_queues.MAIN) -> Started:
    """One failover per incident: a second request while it runs attaches to it; one after it ended
    (refused, say, and now forced) starts a new run under the same id.  Unless the input names them, the
    canary after the switch probes every careflow queue."""
    wid = workflow_id(inp.incident)
    if inp.canary_queues is None:
        inp = inp.model_copy(update={"canary_queues": careflow_queues()})
    started = await start_keyed(
        client, DRFailoverWorkflow.run, inp, id=wid, task_queue=task_queue, again_after_close=True,
        search_attributes=sa.at_start(PIPELINE, FailoverStage.ASSESSING.value, "default")
        if inp.search_attributes else None,
    )  # fmt: skip
    return Started(wid, started)


async def status(client: Client, wid: str) -> FailoverStatus:
    st: FailoverStatus = await client.get_workflow_handle(wid).query(DRFailoverWorkflow.status)
    return st


async def assessed(client: Client, wid: str, timeout: float = 60) -> FailoverStatus:
    """The failover once its assessment is in (probing an unreachable site takes seconds)."""
    return await stages.poll_until(
        lambda: status(client, wid), lambda st: st.stage is not FailoverStage.ASSESSING, timeout
    )


async def result(client: Client, wid: str) -> FailoverStatus:
    """The failover's outcome: its result, or sooner its settled status once the recovery is recorded
    (a rerouted inference tier keeps the run waiting for its server, not the caller)."""
    handle = client.get_workflow_handle_for(DRFailoverWorkflow.run, wid)
    ended = asyncio.ensure_future(handle.result())
    try:
        while True:
            await asyncio.wait([ended], timeout=0.5)
            if ended.done():
                done: FailoverStatus = ended.result()
                return done
            try:
                st: FailoverStatus = await handle.query(DRFailoverWorkflow.status)
            except RPCError:  # no worker answers queries right now: the result is awaited
                continue
            if st.stage.settled and st.recovery:
                return st
    finally:
        ended.cancel()


async def approve(client: Client, wid: str, a: Approval, audit_pool: asyncpg.Pool | None) -> FailoverStatus:
    """The operator's approval; a refusal (none awaited) is audited when the database answers."""
    if audit_pool is None:  # the database is what failed: the workflow's own history is the record
        st: FailoverStatus = await client.get_workflow_handle(wid).execute_update(
            DRFailoverWorkflow.approve_failover, a
        )
        return st
    done: FailoverStatus = await execute_audited(
        client, wid, DRFailoverWorkflow.approve_failover, a, audit_pool=audit_pool, actor=a.by,
        action="approve-failover", resource_type="Database", what="failover",
    )  # fmt: skip
    return done


async def start_failback(client: Client, inp: FailbackInput, task_queue: str = task_queues.MAIN) -> Started:
    """One failback per incident (a request while it runs attaches)."""
    wid = failback_id(inp.incident)
    if inp.canary_queues is None:
        inp = inp.model_copy(update={"canary_queues": careflow_queues()})
    started = await start_keyed(
        client, DRFailbackWorkflow.run, inp, id=wid, task_queue=task_queue, again_after_close=True,
        search_attributes=sa.at_start(PIPELINE, "assessing", "default") if inp.search_attributes else None,
    )  # fmt: skip
    return Started(wid, started)


async def failback_status(client: Client, wid: str) -> FailbackStatus:
    st: FailbackStatus = await client.get_workflow_handle(wid).query(DRFailbackWorkflow.status)
    return st


async def failback_settled(client: Client, wid: str, timeout: float = 3600) -> FailbackStatus:
    """The failback once it waits for the operator or has ended (a rebuild takes a base backup's time)."""
    busy = ("assessing", "rebuilding", "switching-back")
    return await stages.poll_until(
        lambda: failback_status(client, wid), lambda st: st.stage not in busy, timeout, every=1.0
    )


async def return_to_site(client: Client, wid: str, a: Approval, audit_pool: asyncpg.Pool) -> FailbackStatus:
    """The operator's word to switch back (validated: refused unless a rebuilt standby waits), audited."""
    done: FailbackStatus = await execute_audited(
        client, wid, DRFailbackWorkflow.return_to_site, a, audit_pool=audit_pool, actor=a.by,
        action="return-to-site", resource_type="Database", what="failback",
    )  # fmt: skip
    return done


def monitor_schedules(canary_queues: list[str], task_queue: str = task_queues.MAIN) -> dict[str, Schedule]:
    """The health monitor, always one run: the first within a minute of `dev up`, each watching an
    hour, and the start due meanwhile kept (BUFFER_ONE) so the next begins as the last ends."""
    return {
        MONITOR_SCHEDULE_ID: Schedule(
            action=ScheduleActionStartWorkflow(
                DRMonitorWorkflow.run, MonitorInput(canary_queues=canary_queues), id=MONITOR_ID,
                task_queue=task_queue,
                typed_search_attributes=sa.at_start(PIPELINE, "watching", "default"),
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=1))]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE),
            state=ScheduleState(note="careflow health monitor: a failing primary or inference server"),
        )
    }  # fmt: skip

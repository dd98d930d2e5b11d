"""DRFailoverWorkflow on the time-skipping server, its activities standing in for the sites, so the
workflow's own decisions are tested alone (the real activities run in test_failover_e2e.py): the
order fence -> promote -> switch -> verify, the RPO guard and its audited override, the approval with
its escalation timer and deadline, and the outcomes that change nothing."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from careflow.models.dr import (
    Approval,
    Assessment,
    FailoverInput,
    FailoverStage,
    FailoverStatus,
    FeatureRecovery,
    RecordRequest,
    Site,
    StepRequest,
    Verified,
    workflow_id,
)
from careflow.models.dr_failback import FailbackInput, FailbackStatus, RebuildRequest, Rebuilt, failback_id
from starters.clients.history import export_history
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.dr_failback import DRFailbackWorkflow
from workflows.dr_failover import DRFailoverWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
RECORD = os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1"
PRIMARY, STANDBY = "postgresql://127.0.0.1:55432/careflow", "postgresql://127.0.0.1:55433/careflow"

seen: dict[str, list[str]] = defaultdict(list)  # by incident
records: dict[str, RecordRequest] = {}
hold = asyncio.Event()  # "slow" incidents' assessment waits for it


def _incident(wid: str) -> str:
    return wid.removeprefix("dr-failover-").removeprefix("dr-failback-")


@activity.defn(name="dr.assess")
async def assess(wid: str) -> Assessment:
    incident = _incident(wid)
    seen[incident].append("assess")
    if incident.startswith("slow"):
        await hold.wait()
    standby = None if incident.startswith("nostandby") else Site(url=STANDBY, up=True, in_recovery=True)
    if incident.startswith(("nothing", "lagging")):  # the primary answers: the lag is measured
        lag = 5 * 1024 * 1024 if incident.startswith("lagging") else 0
        return Assessment(failed="nothing", primary=Site(url=PRIMARY, up=True, in_recovery=False),
                          standby=standby, lag_bytes=lag, synchronous=False)  # fmt: skip
    asynchronous = incident.startswith("async")
    return Assessment(failed="database", primary=Site(url=PRIMARY, up=False, error="ConnectionRefusedError"),
                      standby=standby, lag_bytes=None, synchronous=not asynchronous,
                      standby_heard_s=12.0 if asynchronous else None)  # fmt: skip


@activity.defn(name="dr.fence")
async def fence(req: StepRequest) -> None:
    seen[req.incident].append(f"fence:{req.url.rsplit(':', 1)[-1]}")


@activity.defn(name="dr.promote")
async def promote(req: StepRequest) -> datetime:
    seen[req.incident].append(f"promote:{req.url.rsplit(':', 1)[-1]}")
    if req.incident.startswith("stuck"):
        raise ApplicationError("pg_ctl promote: server did not promote in time", non_retryable=True)
    return datetime(2026, 12, 6, 12, 0, 30, tzinfo=UTC)


@activity.defn(name="dr.switch")
async def switch(req: StepRequest) -> None:
    seen[req.incident].append(f"switch:{req.url.rsplit(':', 1)[-1]}")


@activity.defn(name="dr.verify")
async def verify(req: StepRequest) -> Verified:
    seen[req.incident].append("verify")
    return Verified(ok=True, first_write_at=datetime(2026, 12, 6, 12, 0, 40, tzinfo=UTC), audit_ok=True,
                    audit_rows=12)  # fmt: skip


@activity.defn(name="dr.record")
async def record(req: RecordRequest) -> list[FeatureRecovery]:
    seen[req.incident].append("record")
    records[req.incident] = req
    return [
        FeatureRecovery(
            feature="lab-alerts", rto_s=40.0, rpo="0 (synchronous)", objective_rto_s=300, met=True
        )
    ]


@activity.defn(name="dr.page")
async def page(req: StepRequest) -> None:
    seen[req.incident].append("page")


@activity.defn(name="dr.rebuild")
async def rebuild(req: RebuildRequest) -> Rebuilt:
    seen[req.incident].append(f"rebuild:{req.standby_url.rsplit(':', 1)[-1]}")
    sync = "sync" if req.synchronous else "async"
    return Rebuilt(
        standby_url=req.standby_url, state="streaming", sync=sync, lag_bytes=0, seconds=3.0, cloned=True
    )


@pytest.fixture
async def env(time_skipping: WorkflowEnvironment, task_queue: str) -> AsyncIterator[WorkflowEnvironment]:
    async with Worker(
        time_skipping.client, task_queue=task_queue, workflows=[DRFailoverWorkflow, DRFailbackWorkflow],
        activities=[assess, fence, promote, switch, verify, record, page, rebuild],
        workflow_runner=sandbox_runner(),
    ):  # fmt: skip
        yield time_skipping


async def start(env: WorkflowEnvironment, task_queue: str, name: str, **extra: object) -> WorkflowHandle:
    incident = f"{name}-{uuid.uuid4().hex[:8]}"
    inp = FailoverInput(
        incident=incident, requested_by="dr-ops", reason="primary down", search_attributes=False,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip
    return await env.client.start_workflow(
        DRFailoverWorkflow.run, inp, id=workflow_id(incident), task_queue=task_queue
    )


async def keep(env: WorkflowEnvironment, handle: WorkflowHandle, name: str) -> None:
    if RECORD:
        (await export_history(env.client, handle.id, HISTORIES)).replace(HISTORIES / f"{name}.json")


async def test_an_automatic_failover_fences_before_it_promotes_and_records_every_step(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "ok", automatic=True)
    done: FailoverStatus = await handle.result()
    incident = _incident(handle.id)
    assert done.stage is FailoverStage.FAILED_OVER and done.reason == f"{STANDBY} is the primary"
    assert seen[incident] == [
        "assess", "fence:55432/careflow", "promote:55433/careflow", "switch:55433/careflow",
        "verify", "record",
    ]  # fmt: skip
    r = records[incident]
    assert [s for s, _ in r.steps] == [
        "assessing", "fencing", "promoting", "switching", "verifying", "failed-over",
    ]  # fmt: skip
    assert r.first_write_at is not None and r.promoted_at is not None and not r.forced and r.synchronous
    assert done.recovery[0].met and done.verified is not None and done.verified.audit_ok
    await keep(env, handle, "DRFailoverWorkflow-automatic")


async def test_the_failover_waits_for_approval_pages_the_next_tier_then_goes_on_when_approved(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "approved")
    incident = _incident(handle.id)

    async def awaiting() -> FailoverStatus | None:
        st: FailoverStatus = await handle.query(DRFailoverWorkflow.status)
        return st if st.stage is FailoverStage.AWAITING_APPROVAL else None

    await wait_until(awaiting, what="awaiting approval")
    assert "fence:55432/careflow" not in seen[incident]  # nothing is done before the approval
    await env.sleep(6 * 60)  # past the 5-minute escalation
    st: FailoverStatus = await wait_until(lambda: _escalated(handle), what="escalated")
    assert st.escalated and "page" in seen[incident]
    await handle.execute_update(DRFailoverWorkflow.approve_failover, Approval(by="dr-lead", note="go"))
    done: FailoverStatus = await handle.result()
    assert done.stage is FailoverStage.FAILED_OVER and done.approved_by == "dr-lead"
    assert seen[incident].count("assess") == 2  # assessed again after the wait: the sites may have moved
    assert (
        "approved" in [s for s, _ in records[incident].steps] and records[incident].approved_by == "dr-lead"
    )
    await keep(env, handle, "DRFailoverWorkflow-approved-after-escalation")


async def _escalated(handle: WorkflowHandle) -> FailoverStatus | None:
    st: FailoverStatus = await handle.query(DRFailoverWorkflow.status)
    return st if st.escalated else None


async def test_without_an_approval_before_the_deadline_nothing_is_touched(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "unapproved")
    done: FailoverStatus = await handle.result()
    incident = _incident(handle.id)
    assert done.stage is FailoverStage.NOT_APPROVED and done.reason == "no approve_failover within 1 h"
    assert seen[incident] == ["assess", "page"] and incident not in records
    await keep(env, handle, "DRFailoverWorkflow-not-approved")


async def test_a_planned_switchover_to_a_lagging_standby_is_refused_with_its_lag_unless_forced(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    refused: FailoverStatus = await (
        await start(env, task_queue, "lagging", automatic=True, planned=True)
    ).result()
    assert refused.stage is FailoverStage.REFUSED
    assert refused.reason.startswith("the standby lags 5242880 bytes, beyond the RPO guard of 1048576")
    forced_handle = await start(env, task_queue, "lagging", automatic=True, planned=True, force=True)
    forced: FailoverStatus = await forced_handle.result()
    assert forced.stage is FailoverStage.FAILED_OVER and records[_incident(forced_handle.id)].forced
    await keep(env, forced_handle, "DRFailoverWorkflow-forced")


async def test_an_asynchronous_standby_with_the_primary_gone_needs_the_loss_accepted(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "async", automatic=True)
    refused: FailoverStatus = await handle.result()
    assert refused.stage is FailoverStage.REFUSED and refused.reason.startswith(
        "asynchronous replication and the primary down: what it committed after the standby last heard "
        "from it (12.0 s ago) cannot be known"
    )
    assert seen[_incident(handle.id)] == ["assess"]  # nothing touched
    await keep(env, handle, "DRFailoverWorkflow-refused-asynchronous")
    forced: FailoverStatus = await (
        await start(env, task_queue, "async", automatic=True, force=True)
    ).result()
    assert forced.stage is FailoverStage.FAILED_OVER


async def test_a_promotion_that_fails_after_the_fence_is_a_named_outcome_and_pages_operations(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "stuck", automatic=True)
    done: FailoverStatus = await handle.result()
    assert done.stage is FailoverStage.FAILOVER_FAILED
    assert done.reason.startswith("the old primary is fenced, promoting failed: pg_ctl promote")
    assert seen[_incident(handle.id)] == ["assess", "fence:55432/careflow", "promote:55433/careflow", "page"]
    await keep(env, handle, "DRFailoverWorkflow-failover-failed")


async def test_nothing_to_fail_over_and_nothing_to_promote_are_named_outcomes(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    nothing: FailoverStatus = await (await start(env, task_queue, "nothing", automatic=True)).result()
    assert nothing.stage is FailoverStage.NOTHING_FAILED and "answers as the primary" in nothing.reason
    handle = await start(env, task_queue, "nostandby", automatic=True)
    alone: FailoverStatus = await handle.result()
    assert (
        alone.stage is FailoverStage.REFUSED and alone.reason == "nothing to promote: no standby configured"
    )
    assert seen[_incident(handle.id)] == ["assess"]
    await keep(env, handle, "DRFailoverWorkflow-refused")


async def test_a_second_request_for_the_same_incident_attaches_and_an_early_approval_is_refused(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    from starters.clients import dr as client_of

    inp = FailoverInput(
        incident=f"slow-{uuid.uuid4().hex[:8]}", requested_by="dr-ops", reason="primary down",
        search_attributes=False,
    )  # fmt: skip
    first = await client_of.start(env.client, inp, task_queue=task_queue)
    second = await client_of.start(env.client, inp, task_queue=task_queue)
    assert first.started and not second.started and first.workflow_id == second.workflow_id
    handle = env.client.get_workflow_handle_for(DRFailoverWorkflow.run, first.workflow_id)
    await wait_until(lambda: "assess" in seen[inp.incident], what="assessing")
    with pytest.raises(WorkflowUpdateFailedError) as refused:  # the validator: nothing awaited yet
        await handle.execute_update(DRFailoverWorkflow.approve_failover, Approval(by="eager"))
    assert "no approval is awaited: the failover is assessing" in str(refused.value.cause)
    hold.set()
    await wait_until(lambda: _awaiting(handle), what="awaiting approval")
    await handle.execute_update(DRFailoverWorkflow.approve_failover, Approval(by="dr-lead"))
    done: FailoverStatus = await handle.result()
    assert done.stage is FailoverStage.FAILED_OVER and done.approved_by == "dr-lead"


async def _awaiting(handle: WorkflowHandle) -> FailoverStatus | None:
    st: FailoverStatus = await handle.query(DRFailoverWorkflow.status)
    return st if st.stage is FailoverStage.AWAITING_APPROVAL else None


async def test_a_failback_with_nobody_asking_to_return_keeps_the_roles_with_a_standby_again(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    incident = f"nothing-fb-{uuid.uuid4().hex[:8]}"  # the (new) primary answers
    handle = await env.client.start_workflow(
        DRFailbackWorkflow.run,
        FailbackInput(incident=incident, requested_by="dr-ops", wait_hours=2, search_attributes=False),
        id=failback_id(incident), task_queue=task_queue,
    )  # fmt: skip
    done: FailbackStatus = await handle.result()  # the 2 h wait skipped
    assert done.stage == "rebuilt" and "no return asked" in done.reason
    assert seen[incident] == ["assess", "rebuild:55433/careflow"]  # nothing switched back
    await keep(env, handle, "DRFailbackWorkflow-rebuilt")


async def test_a_failback_needs_a_primary_that_answers(env: WorkflowEnvironment, task_queue: str) -> None:
    incident = f"down-fb-{uuid.uuid4().hex[:8]}"
    done: FailbackStatus = await env.client.execute_workflow(
        DRFailbackWorkflow.run,
        FailbackInput(incident=incident, requested_by="dr-ops", search_attributes=False),
        id=failback_id(incident), task_queue=task_queue,
    )  # fmt: skip
    assert done.stage == "refused" and "is down" in done.reason and seen[incident] == ["assess"]

"""DRFailoverWorkflow and DRMonitorWorkflow on the time-skipping server, their activities standing in
for the sites, so the workflows' own decisions are tested alone (the real activities run in
test_failover_e2e.py and test_monitor_e2e.py): the order fence -> promote -> switch -> verify, the RPO
guard and its audited override, the approval with its escalation timer and deadline, the outcomes that
change nothing, the inference tier rerouted and restored, and the health monitor's alarms.  (An
inference alarm, whose failover outlives the monitor's run, is tested on the dev server: this server
stops skipping time once a parent has closed with an abandoned child still running.)"""

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
    InferenceSite,
    RecordRequest,
    Rerouted,
    RerouteRequest,
    Site,
    StepRequest,
    TierMove,
    Verified,
    workflow_id,
)
from careflow.models.dr_failback import FailbackInput, FailbackStatus, RebuildRequest, Rebuilt, failback_id
from careflow.models.dr_monitor import Alarm, MonitorInput, MonitorResult, WatchRequest
from careflow.models.platform import ProbeInput, ProbeResult
from starters.clients.history import export_history
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.dr_failback import DRFailbackWorkflow
from workflows.dr_failover import DRFailoverWorkflow
from workflows.dr_monitor import DRMonitorWorkflow
from workflows.platform_canary import PlatformCanaryWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
RECORD = os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1"
PRIMARY, STANDBY = "postgresql://127.0.0.1:55432/careflow", "postgresql://127.0.0.1:55433/careflow"

seen: dict[str, list[str]] = defaultdict(list)  # by incident
records: dict[str, RecordRequest] = {}
hold = asyncio.Event()  # "slow" incidents' assessment waits for it
auto: dict[str, str] = {}  # a health monitor's incident -> the scenario its failover finds
SINCE = datetime(2026, 12, 6, 11, 59, 30, tzinfo=UTC)  # the monitors' first failed probe


def _incident(wid: str) -> str:
    return wid.removeprefix("dr-failover-").removeprefix("dr-failback-")


@activity.defn(name="dr.assess")
async def assess(wid: str) -> Assessment:
    incident = _incident(wid)
    seen[incident].append("assess")
    kind = auto.get(incident, incident)
    if kind.startswith("slow"):
        await hold.wait()
    standby = None if kind.startswith("nostandby") else Site(url=STANDBY, up=True, in_recovery=True)
    servers = [InferenceSite(provider="self_hosted", url="http://127.0.0.1:8012/v1/models",
                             up=not kind.startswith(("inference", "both")))]  # fmt: skip
    if kind.startswith(("nothing", "lagging", "inference")):  # the primary answers: the lag is measured
        lag = 5 * 1024 * 1024 if kind.startswith("lagging") else 0
        return Assessment(failed="inference" if kind.startswith("inference") else "nothing",
                          primary=Site(url=PRIMARY, up=True, in_recovery=False),
                          standby=standby, lag_bytes=lag, synchronous=False, inference=servers)  # fmt: skip
    asynchronous = kind.startswith("async")
    return Assessment(failed="both" if kind.startswith("both") else "database",
                      primary=Site(url=PRIMARY, up=False, error="ConnectionRefusedError"),
                      standby=standby, lag_bytes=None, synchronous=not asynchronous,
                      standby_heard_s=12.0 if asynchronous else None, inference=servers)  # fmt: skip


@activity.defn(name="dr.reroute")
async def reroute(req: RerouteRequest) -> Rerouted:
    seen[req.incident].append("reroute")
    move = TierMove(tier="standard", provider="self_hosted", fallback="azure_openai", model="gpt-4o-mini",
                    phi=False)  # fmt: skip
    return Rerouted(held=req.providers, moves=[move], at=datetime(2026, 12, 6, 12, 0, 5, tzinfo=UTC))


@activity.defn(name="dr.await_inference")
async def await_inference(req: RerouteRequest) -> datetime:
    seen[req.incident].append("await")
    if auto.get(req.incident, req.incident).startswith("inferencedead"):
        raise ApplicationError("activity timed out waiting for the server", non_retryable=True)
    return datetime(2026, 12, 6, 13, 0, 0, tzinfo=UTC)


@activity.defn(name="dr.release")
async def release(req: RerouteRequest) -> None:
    seen[req.incident].append("release")


@activity.defn(name="platform.probe")
async def probe(inp: ProbeInput) -> ProbeResult:
    """The canary's probe: the worker of a "sickqueue" incident cannot reach the new primary."""
    sick = "sickqueue" in inp.probe_key
    return ProbeResult(task_queue=inp.task_queue, worker_identity="w", database_ok=not sick, codec_ok=True,
                       error="database: ConnectionRefusedError" if sick else None)  # fmt: skip


@activity.defn(name="dr.watch")
async def watch(req: WatchRequest) -> Alarm | None:
    """The monitor `dr-monitor-<scenario>-<hex>` finds its scenario: healthy, or an alarm whose failover
    (by its incident) finds the same scenario."""
    scenario = req.workflow_id.removeprefix("dr-monitor-").rsplit("-", 1)[0]
    if scenario == "healthy":
        return None
    failed = "inference" if scenario.startswith("inference") else "database"
    since = SINCE.replace(microsecond=len(auto))  # incidents of their own (the id keeps whole seconds)
    since = since.replace(second=len(auto) % 60)
    auto[f"auto-{failed}-{since:%Y%m%dt%H%M%S}"] = scenario
    return Alarm(failed=failed, since=since, reason=f"{failed}: every probe failed for 30 s", automatic=True)


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
        time_skipping.client, task_queue=task_queue,
        workflows=[DRFailoverWorkflow, DRFailbackWorkflow, DRMonitorWorkflow, PlatformCanaryWorkflow],
        activities=[assess, fence, promote, switch, verify, record, page, rebuild, reroute, await_inference,
                    release, watch, probe],
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


async def test_a_queue_whose_workers_cannot_reach_the_new_primary_fails_the_verification_by_name(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "sickqueue", automatic=True)
    done: FailoverStatus = await handle.result()
    assert done.stage is FailoverStage.VERIFY_FAILED and done.verified is not None
    assert not done.verified.canary_healthy and done.verified.canary_unreachable == {
        task_queue: "database: ConnectionRefusedError"
    }
    assert (
        done.reason
        == f"promoted, but not verified: platform canary: {task_queue}: database: ConnectionRefusedError"
    )
    ok: FailoverStatus = await (await start(env, task_queue, "ok", automatic=True)).result()
    assert ok.verified is not None and ok.verified.canary_healthy and ok.verified.canary_unreachable == {}
    await keep(env, handle, "DRFailoverWorkflow-canary-failed")


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
        search_attributes=False, canary_queues=[],  # the canary on this queue only
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


async def test_a_self_hosted_server_down_is_rerouted_at_once_and_released_when_it_answers(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "inference")  # not automatic: rerouting needs no approval
    done: FailoverStatus = await handle.result()
    incident = _incident(handle.id)
    assert done.stage is FailoverStage.INFERENCE_RESTORED and "self_hosted answer again" in done.reason
    assert seen[incident] == ["assess", "reroute", "record", "await", "release", "record"]  # no fence
    assert [s for s, _ in done.stages] == ["assessing", "rerouting", "rerouted", "inference-restored"]
    assert done.rerouted is not None and done.rerouted.restored_at is not None
    assert done.rerouted.moves[0].fallback == "azure_openai" and not done.rerouted.moves[0].phi
    r = records[incident]
    assert (
        r.rerouted_at == done.rerouted.at and r.first_write_at is None and r.outcome == "inference-restored"
    )
    await keep(env, handle, "DRFailoverWorkflow-inference-restored")


async def test_a_server_that_never_answers_is_released_to_the_breaker_and_the_failover_ends(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    done: FailoverStatus = await (await start(env, task_queue, "inferencedead")).result()
    assert done.stage is FailoverStage.REROUTED and "still down after 72 h" in done.reason
    assert seen[done.incident][-3:] == ["await", "release", "record"]
    assert done.rerouted is not None and done.rerouted.restored_at is None


async def test_both_down_the_database_fails_over_first_then_the_tiers_move_on_the_new_primary(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    done: FailoverStatus = await (await start(env, task_queue, "both", automatic=True)).result()
    assert done.stage is FailoverStage.FAILED_OVER
    assert seen[done.incident] == [
        "assess", "fence:55432/careflow", "promote:55433/careflow", "switch:55433/careflow", "verify",
        "record", "reroute", "await", "release", "record",
    ]  # fmt: skip
    steps = [s for s, _ in records[done.incident].steps]
    assert steps[-3:] == ["failed-over", "rerouting", "inference-restored"]


async def start_monitor(env: WorkflowEnvironment, task_queue: str, scenario: str) -> WorkflowHandle:
    return await env.client.start_workflow(
        DRMonitorWorkflow.run, MonitorInput(search_attributes=False),
        id=f"dr-monitor-{scenario}-{uuid.uuid4().hex[:8]}", task_queue=task_queue,
    )  # fmt: skip


async def test_the_monitor_ends_its_watch_quietly_when_everything_answers(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start_monitor(env, task_queue, "healthy")
    done: MonitorResult = await handle.result()
    assert done.outcome == "healthy" and done.alarm is None and done.incident is None
    await keep(env, handle, "DRMonitorWorkflow-healthy")


async def test_the_monitor_starts_the_failover_from_the_first_failed_probe_and_waits_for_it(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start_monitor(env, task_queue, "ok")
    done: MonitorResult = await handle.result()
    assert done.outcome == "failed-over" and done.failover_stage == "failed-over"
    assert done.alarm is not None and done.incident == f"auto-database-{done.alarm.since:%Y%m%dt%H%M%S}"
    r = records[done.incident]
    assert r.requested_by == "health-monitor" and r.detected_at == done.alarm.since  # the RTO's start
    assert seen[done.incident][:2] == ["assess", "fence:55432/careflow"]  # automatic, by its setting
    await keep(env, handle, "DRMonitorWorkflow-failed-over")


async def test_a_refused_failover_quiets_the_monitor_before_it_may_ask_again(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start_monitor(env, task_queue, "nostandby")
    done: MonitorResult = await handle.result()  # the 30-minute cooldown skipped
    assert done.outcome == "failover-ended" and done.failover_stage == "refused"
    assert done.incident is not None and seen[done.incident] == ["assess"]
    described = await handle.describe()
    assert described.close_time is not None and described.start_time is not None
    assert (described.close_time - described.start_time).total_seconds() >= 30 * 60

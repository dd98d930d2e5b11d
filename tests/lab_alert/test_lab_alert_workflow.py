"""LabResultAlertWorkflow on the time-skipping server: 15- and 30-minute escalations, acknowledgement
at each stage, no alert for non-critical results.  The activities here stand in for FHIR and the
gateway so the workflow's timing logic is tested alone; the real activities are tested elsewhere."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.audit import RecordAuditInput, RecordAuditOutput
from careflow.models.lab_alert import (
    AlertAck,
    AlertDelivery,
    Assessment,
    AssessRequest,
    ContextRequest,
    DeliveryReceipt,
    LabAlertInput,
    LabResult,
    PatientLabContext,
    Urgency,
    workflow_id,
)
from starters.clients.history import export_history
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.lab_alert import LabResultAlertWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"

delivered: list[str] = []
audited: list[str] = []
# Outages: a workflow whose id holds the tag finds `system` ("ehr", "assess", "notifier") down until
# then (server time, which the time-skipping server moves on).
outages: dict[str, tuple[str, datetime]] = {}


def down(system: str) -> bool:
    info = activity.info()
    return any(
        tag in (info.workflow_id or "") and what == system and info.current_attempt_scheduled_time < until
        for tag, (what, until) in outages.items()
    )


@activity.defn(name="audit.record")
async def record_audit(inp: RecordAuditInput) -> RecordAuditOutput:
    audited.append(f"{inp.event.workflow_id}:{inp.step}:{inp.event.actor}")
    return RecordAuditOutput(event_id=len(audited), inserted=True)


@activity.defn(name="lab.patient_context")
async def patient_context(req: ContextRequest) -> PatientLabContext:
    if down("ehr"):
        raise ApplicationError("connection refused", type="FhirUnavailable")
    if req.patient_id.startswith("unknown-"):  # an MRN the EHR does not know
        return PatientLabContext(
            patient_matched=False, unmatched_key="mrn-test", charge_nurse_id="rn-1", chief_id="chief-1"
        )
    return PatientLabContext(baseline=[0.9], physician_id="dr-1", charge_nurse_id="rn-1", chief_id="chief-1")


@activity.defn(name="lab.assess")
async def assess(req: AssessRequest) -> Assessment:
    if down("assess"):
        raise ApplicationError("the database system is shutting down", type="CannotConnectNowError")
    urgency = Urgency.CRITICAL if (req.result.value or 0) > 6 else Urgency.LOW
    return Assessment(urgency=urgency, rule_urgency=urgency, reasons=["test"], clinical_narrative="n")


@activity.defn(name="lab.deliver_alert")
async def deliver_alert(d: AlertDelivery) -> DeliveryReceipt:
    if down("notifier"):
        raise ApplicationError("connection refused", type="ConnectionRefusedError")
    delivered.append(f"{d.result_key}:{d.level}:{d.recipient_id}")
    # As the real activity: the push goes out even when the EHR cannot take the Task.
    return DeliveryReceipt(level=d.level, task_id="" if down("ehr") else f"task-{d.level}", notified=True)


@activity.defn(name="lab.alert_task")
async def alert_task(d: AlertDelivery) -> str:
    if down("ehr"):
        raise ApplicationError("connection refused", type="FhirUnavailable")
    return f"task-{d.level}-late"


@pytest.fixture
async def env(time_skipping: WorkflowEnvironment, task_queue: str) -> AsyncIterator[WorkflowEnvironment]:
    async with Worker(
        time_skipping.client,
        task_queue=task_queue,
        workflows=[LabResultAlertWorkflow],
        activities=[patient_context, assess, deliver_alert, alert_task, record_audit],
        workflow_runner=sandbox_runner(),
    ):
        yield time_skipping


async def start(
    env: WorkflowEnvironment, task_queue: str, value: float = 6.9, patient_id: str = "pat-1", tag: str = ""
) -> WorkflowHandle:
    key = tag + uuid.uuid4().hex
    result = LabResult(
        result_key=key, patient_id=patient_id, loinc="2823-3", value=value, value_text=str(value)
    )
    return await env.client.start_workflow(
        LabResultAlertWorkflow.run,
        LabAlertInput(result=result, search_attributes=False),
        id=workflow_id(key),
        task_queue=task_queue,
    )


async def start_with_outage(
    env: WorkflowEnvironment, task_queue: str, system: str, outage: timedelta
) -> WorkflowHandle:
    """A critical result whose workflow finds `system` down for `outage` from now."""
    tag = f"{system}down{uuid.uuid4().hex[:6]}"
    outages[tag] = (system, await env.get_current_time() + outage)
    return await start(env, task_queue, tag=tag)


async def stage(handle: WorkflowHandle) -> str:
    return (await handle.query(LabResultAlertWorkflow.status)).stage


async def wait_alerted(handle: WorkflowHandle) -> None:
    await wait_until(lambda: _is(handle, "alerted"), what="the alert to go out")


async def _is(handle: WorkflowHandle, expected: str) -> bool:
    return await stage(handle) == expected


def levels(handle: WorkflowHandle) -> list[str]:
    key = handle.id.removeprefix("lab-alert-")
    return [d.split(":")[1] for d in delivered if d.startswith(key)]


async def test_physician_acknowledges_before_15_minutes(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue)
    await wait_alerted(handle)
    await env.sleep(timedelta(minutes=5))
    await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by="dr-1"))
    await handle.signal(
        LabResultAlertWorkflow.acknowledge, AlertAck(by="someone-else")
    )  # redelivery: ignored
    out = await handle.result()
    assert levels(handle) == ["physician"]
    assert out.status.stage == "acknowledged"
    assert out.status.acknowledged is not None
    assert (out.status.acknowledged.by, out.status.acknowledged.level_at_ack) == ("dr-1", "physician")
    assert audited.count(f"{handle.id}:acknowledge:dr-1") == 1  # the acknowledgement is audited once
    assert out.status.alerted_at is not None
    waited = out.status.acknowledged.at - out.status.alerted_at
    assert timedelta(minutes=5) <= waited < timedelta(minutes=15)


async def test_escalates_to_charge_nurse_at_15_minutes(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue)
    await wait_alerted(handle)
    await env.sleep(timedelta(minutes=20))
    assert levels(handle) == ["physician", "charge_nurse"]
    assert await stage(handle) == "escalated"
    await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by="rn-1", role="charge_nurse"))
    out = await handle.result()
    assert levels(handle) == ["physician", "charge_nurse"]
    assert out.status.acknowledged is not None and out.status.acknowledged.level_at_ack == "charge_nurse"
    assert [d.task_id for d in out.status.deliveries] == ["task-physician", "task-charge_nurse"]


async def test_escalates_to_chief_at_30_minutes_and_is_acknowledged(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue)
    await wait_alerted(handle)
    await env.sleep(timedelta(minutes=31))
    assert levels(handle) == ["physician", "charge_nurse", "chief"]
    await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by="chief-1", role="chief"))
    out = await handle.result()
    assert out.status.acknowledged is not None and out.status.acknowledged.level_at_ack == "chief"
    assert out.status.stage == "acknowledged"


async def test_never_acknowledged_closes_after_the_give_up_time(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue)
    out = await handle.result()  # the time-skipping server runs the 24 h out
    assert levels(handle) == ["physician", "charge_nurse", "chief"]
    assert out.status.stage == "unacknowledged" and out.status.acknowledged is None
    assert [
        f"{d.split(':')[2]}" for d in delivered if d.startswith(handle.id.removeprefix("lab-alert-"))
    ] == ["dr-1", "rn-1", "chief-1"]


async def test_non_critical_result_alerts_nobody(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue, value=4.1)
    out = await handle.result()
    assert out.status.stage == "no-alert" and out.assessment.urgency == Urgency.LOW
    assert levels(handle) == []


async def test_unmatched_patient_alerts_lab_and_charge_nurse_then_chief_at_15_minutes(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, patient_id="unknown-mrn-1")
    await wait_alerted(handle)
    assert levels(handle) == ["lab", "charge_nurse"]
    await env.sleep(timedelta(minutes=16))
    assert levels(handle) == ["lab", "charge_nurse", "chief"]
    await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by="chief-1", role="chief"))
    out = await handle.result()
    assert out.status.acknowledged is not None and out.status.acknowledged.level_at_ack == "chief"
    assert audited.count(f"{handle.id}:acknowledge:chief-1") == 1


@pytest.mark.parametrize("outage", [timedelta(minutes=2), timedelta(hours=2)], ids=["2min", "2h"])
async def test_ehr_down_alerts_from_the_message_on_time_and_files_the_tasks_later(
    env: WorkflowEnvironment, task_queue: str, outage: timedelta
) -> None:
    """No chart, no physician, no roster while the EHR is down: the lab and the charge nurse are
    alerted from what the HL7 message says once the context step's 30 s budget runs out, the chief
    at 15 minutes if nobody acknowledges, and the EHR Tasks are filed when the EHR is back."""
    handle = await start_with_outage(env, task_queue, "ehr", outage)
    await env.sleep(timedelta(minutes=1))
    assert levels(handle) == ["lab", "charge_nurse"]  # within the minute, with the EHR still down
    status = await handle.query(LabResultAlertWorkflow.status)
    assert status.stage == "alerted" and [d.task_id for d in status.deliveries] == ["", ""]
    await env.sleep(timedelta(minutes=15))
    assert levels(handle) == ["lab", "charge_nurse", "chief"]  # escalated on time during the outage
    await env.sleep(outage)
    await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by="chief-1", role="chief"))
    out = await handle.result()
    assert out.status.stage == "acknowledged" and out.assessment.urgency == Urgency.CRITICAL
    # the two pushes sent while the EHR was down got their Tasks once it was back; the chief's went
    # out with its Task when the EHR was up again (2 min) or without it, filed later (2 h)
    assert [d.task_id for d in out.status.deliveries][:2] == ["task-lab-late", "task-charge_nurse-late"]
    assert all(d.task_id for d in out.status.deliveries)
    if os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1" and outage > timedelta(hours=1):
        written = await export_history(env.client, handle.id, HISTORIES)
        written.replace(HISTORIES / "LabResultAlertWorkflow-ehr-down.json")


@pytest.mark.parametrize("outage", [timedelta(minutes=2), timedelta(hours=2)], ids=["2min", "2h"])
async def test_assessment_down_alerts_by_the_rules(
    env: WorkflowEnvironment, task_queue: str, outage: timedelta
) -> None:
    handle = await start_with_outage(env, task_queue, "assess", outage)
    await env.sleep(timedelta(minutes=1))
    assert levels(handle) == ["physician"]
    await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by="dr-1"))
    out = await handle.result()
    assert out.assessment.ai_engine.startswith("unavailable") and out.assessment.urgency == Urgency.CRITICAL
    assert out.assessment.reasons  # the rules' own reasons


@pytest.mark.parametrize("outage", [timedelta(minutes=2), timedelta(hours=2)], ids=["2min", "2h"])
async def test_notifier_down_is_waited_for_and_escalation_keeps_its_clock(
    env: WorkflowEnvironment, task_queue: str, outage: timedelta
) -> None:
    handle = await start_with_outage(env, task_queue, "notifier", outage)
    await env.sleep(outage + timedelta(minutes=1))
    out_levels = levels(handle)
    # delivered as soon as the push works again; escalations due meanwhile follow at once
    assert out_levels[0] == "physician"
    assert out_levels == (
        ["physician"] if outage < timedelta(minutes=15) else ["physician", "charge_nurse", "chief"]
    )
    await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by="dr-1"))
    assert (await handle.result()).status.stage == "acknowledged"

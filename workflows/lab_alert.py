"""LabResultAlertWorkflow (seed P7): one workflow per lab result, id `lab-alert-<result key>`.

context -> assessment (rules floor, then AI) -> if critical: alert the responsible physician ->
wait for `acknowledge`; at 15 min escalate to the charge nurse, at 30 min to the department chief;
keep waiting until ACK_GIVE_UP, then close as unacknowledged.  Every step is an idempotent activity;
a redelivered HL7 message maps to the same workflow id and starts nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities, RecordAuditInput
    from activities.lab_alert import LabAlertActivities
    from careflow.models.audit import AuditAction, AuditEvent, AuditEventType
    from careflow.models.lab_alert import (
        AckRecord,
        AlertAck,
        AlertDelivery,
        AssessRequest,
        ContextRequest,
        LabAlertInput,
        LabAlertOutput,
        LabAlertStatus,
        UnmatchedPatient,
        Urgency,
    )

WORKFLOW_ID_PREFIX = "lab-alert-"
ESCALATIONS = ((timedelta(minutes=15), "charge_nurse"), (timedelta(minutes=30), "chief"))
# A patient the EHR does not know has no responsible physician to find: the lab that sent the result
# and the charge nurse are alerted at once, the department chief at 15 minutes.
UNMATCHED_FIRST = ("lab", "charge_nurse")
UNMATCHED_ESCALATIONS = ((timedelta(minutes=15), "chief"),)
ACK_GIVE_UP = timedelta(hours=24)

FAST_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
)
DELIVERY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=15))


def workflow_id(result_key: str) -> str:
    return WORKFLOW_ID_PREFIX + result_key


@workflow.defn(name="LabResultAlertWorkflow")
class LabResultAlertWorkflow:
    def __init__(self) -> None:
        self._status = LabAlertStatus(stage="received")
        self._ack: AlertAck | None = None

    @workflow.run
    async def run(self, inp: LabAlertInput) -> LabAlertOutput:
        wid = workflow.info().workflow_id
        result = inp.result
        context = await workflow.execute_activity_method(
            LabAlertActivities.patient_context,
            ContextRequest(patient_id=result.patient_id, loinc=result.loinc),
            start_to_close_timeout=timedelta(seconds=20),
            retry_policy=FAST_RETRY,
        )
        self._status.stage = "assessing"
        assessment = await workflow.execute_activity_method(
            LabAlertActivities.assess,
            AssessRequest(result=result, context=context, workflow_id=wid),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=FAST_RETRY,
        )
        self._status.urgency = assessment.urgency
        if assessment.urgency != Urgency.CRITICAL:
            self._status.stage = "no-alert"
            return LabAlertOutput(result_key=result.result_key, assessment=assessment, status=self._status)

        recipients = {
            "physician": context.physician_id,
            "charge_nurse": context.charge_nurse_id,
            "chief": context.chief_id,
            "lab": None,
        }
        summary = assessment.clinical_narrative or "; ".join(assessment.reasons)
        first: tuple[str, ...] = ("physician",)
        escalations: tuple[tuple[timedelta, str], ...] = ESCALATIONS
        unmatched: UnmatchedPatient | None = None
        if not context.patient_matched and workflow.patched("unmatched-patient"):
            unmatched = UnmatchedPatient(
                mrn=result.patient_id,
                name=result.patient_name,
                birth_date=result.birth_date,
                ordering_provider=result.ordering_provider,
                facility=result.sending_facility,
            )
            summary = f"{unmatched.describe()}. {summary}"
            first, escalations = UNMATCHED_FIRST, UNMATCHED_ESCALATIONS

        async def deliver(level: str) -> None:
            receipt = await workflow.execute_activity_method(
                LabAlertActivities.deliver_alert,
                AlertDelivery(
                    result_key=result.result_key,
                    level=level,
                    recipient_id=recipients[level],
                    patient_id="" if unmatched else (context.fhir_patient_id or result.patient_id),
                    loinc=result.loinc,
                    urgency=assessment.urgency,
                    summary=summary,
                    workflow_id=wid,
                    unmatched=unmatched,
                ),
                start_to_close_timeout=timedelta(seconds=20),
                retry_policy=DELIVERY_RETRY,
            )
            self._status.deliveries.append(receipt)

        alerted_at = self._status.alerted_at = workflow.now()
        for level in first:
            await deliver(level)
        if self._status.acknowledged is None:  # the acknowledgement may beat the delivery's completion
            self._status.stage = "alerted"
        for after, level in escalations:
            if await self._acknowledged_by(alerted_at + after):
                break
            await deliver(level)
            if self._status.acknowledged is None:
                self._status.stage = "escalated"
        else:
            await self._acknowledged_by(alerted_at + ACK_GIVE_UP)
        if self._status.acknowledged is None:
            self._status.stage = "unacknowledged"
        elif workflow.patched("audit-acknowledgement"):
            await self._audit_acknowledgement(wid, context.audit_subject or result.patient_id)
        return LabAlertOutput(result_key=result.result_key, assessment=assessment, status=self._status)

    async def _audit_acknowledgement(self, wid: str, patient_id: str) -> None:
        ack = self._status.acknowledged
        assert ack is not None
        event = AuditEvent(
            event_type=AuditEventType.REVIEWER_ACTION,
            actor=ack.by,
            actor_type="user",
            action=AuditAction.EXECUTE,
            patient_id=patient_id,
            resource_type="Task",
            workflow_id=wid,
            detail={"action": "acknowledge", "role": ack.role, "level": ack.level_at_ack},
            occurred_at=ack.at,  # explicit: the model's default clock is not allowed in workflow code
        )
        await workflow.execute_activity_method(
            AuditActivities.record,
            RecordAuditInput(event=event, step="acknowledge"),
            start_to_close_timeout=timedelta(seconds=20),
            retry_policy=DELIVERY_RETRY,
        )

    async def _acknowledged_by(self, deadline: datetime) -> bool:
        remaining = deadline - workflow.now()
        if self._status.acknowledged is not None:
            return True
        if remaining <= timedelta(0):
            return False
        try:
            await workflow.wait_condition(lambda: self._status.acknowledged is not None, timeout=remaining)
        except TimeoutError:
            return False
        return True

    @workflow.signal(name="acknowledge")
    def acknowledge(self, ack: AlertAck) -> None:
        # Signals arrive at least once and may come from several devices: the first one counts.
        if self._status.acknowledged is not None:
            return
        level = self._status.deliveries[-1].level if self._status.deliveries else "none"
        self._status.acknowledged = AckRecord(by=ack.by, role=ack.role, at=workflow.now(), level_at_ack=level)
        self._status.stage = "acknowledged"

    @workflow.query(name="status")
    def status(self) -> LabAlertStatus:
        return self._status

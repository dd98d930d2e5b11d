"""LabResultAlertWorkflow (seed P7): one workflow per lab result, id `lab-alert-<result key>`.

context -> assessment (rules floor, then AI) -> if critical: alert the responsible physician ->
wait for `acknowledge`; at 15 min escalate to the charge nurse, at 30 min to the department chief;
keep waiting until ACK_GIVE_UP, then close as unacknowledged.  Every step is an idempotent activity;
a redelivered HL7 message maps to the same workflow id and starts nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityHandle

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities, RecordAuditInput
    from activities.lab_alert import LabAlertActivities
    from careflow.labs.rules import assess_rules
    from careflow.models.audit import AuditAction, AuditEvent, AuditEventType
    from careflow.models.lab_alert import (
        AckRecord,
        AlertAck,
        AlertDelivery,
        Assessment,
        AssessRequest,
        ContextRequest,
        DeliveryReceipt,
        LabAlertInput,
        LabAlertOutput,
        LabAlertStage,
        LabAlertStatus,
        PatientLabContext,
        UnmatchedPatient,
        Urgency,
    )
    from workflows import retry_rules
    from workflows import search_attributes as sa

ESCALATIONS = ((timedelta(minutes=15), "charge_nurse"), (timedelta(minutes=30), "chief"))
# A patient the EHR does not know has no responsible physician to find: the lab that sent the result
# and the charge nurse are alerted at once, the department chief at 15 minutes.
UNMATCHED_FIRST = ("lab", "charge_nurse")
UNMATCHED_ESCALATIONS = ((timedelta(minutes=15), "chief"),)
ACK_GIVE_UP = timedelta(hours=24)
# The EHR or the assessment step down past its budget: alert from the message, by the rules alone,
# and create the EHR Task once the EHR is back (workflows/retry_rules.py).
OUTAGE_PATCH = "ehr-outage-path"
# Stage and urgency as search attributes, so `careflow alerts list` is one visibility query.
VISIBLE_PATCH = "search-attributes"


@workflow.defn(name="LabResultAlertWorkflow")
class LabResultAlertWorkflow:
    def __init__(self) -> None:
        self._status = LabAlertStatus(stage=LabAlertStage.RECEIVED)
        self._ack: AlertAck | None = None
        self._visible = False

    @workflow.run
    async def run(self, inp: LabAlertInput) -> LabAlertOutput:
        wid = workflow.info().workflow_id
        result = inp.result
        self._visible = inp.search_attributes and workflow.patched(VISIBLE_PATCH)
        try:
            context = await workflow.execute_activity_method(
                LabAlertActivities.patient_context,
                ContextRequest(patient_id=result.patient_id, loinc=result.loinc),
                **retry_rules.LAB_CONTEXT.options(),
            )
        except ActivityError:
            if not workflow.patched(OUTAGE_PATCH):
                raise
            # The EHR did not answer in time: the alert must not wait for it.
            context = PatientLabContext(
                ehr_available=False,
                missing=[f"the EHR did not answer within {retry_rules.LAB_CONTEXT.budget.seconds} s"],
            )
        self._stage(LabAlertStage.ASSESSING)
        try:
            assessment = await workflow.execute_activity_method(
                LabAlertActivities.assess,
                AssessRequest(result=result, context=context, workflow_id=wid),
                **retry_rules.LAB_ASSESS.options(),
            )
        except ActivityError:
            if not workflow.patched(OUTAGE_PATCH):
                raise
            # The deterministic rules are the floor of every assessment; they need nothing but the value.
            finding = assess_rules(result, context)
            assessment = Assessment(
                urgency=finding.urgency,
                rule_urgency=finding.urgency,
                reasons=finding.reasons,
                clinical_narrative="; ".join(finding.reasons),
                ai_engine="unavailable (the assessment step did not answer)",
            )
        self._status.urgency = assessment.urgency
        if assessment.urgency != Urgency.CRITICAL:
            self._stage(LabAlertStage.NO_ALERT)
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
        if (
            not context.patient_matched and workflow.patched("unmatched-patient")
        ) or not context.ehr_available:
            unmatched = UnmatchedPatient(
                mrn=result.patient_id,
                name=result.patient_name,
                birth_date=result.birth_date,
                ordering_provider=result.ordering_provider,
                facility=result.sending_facility,
                reason="PATIENT NOT MATCHED IN THE EHR"
                if context.ehr_available
                else "EHR UNAVAILABLE, CHART NOT READ",
            )
            summary = f"{unmatched.describe()}. {summary}"
            first, escalations = UNMATCHED_FIRST, UNMATCHED_ESCALATIONS

        deferred: list[tuple[DeliveryReceipt, ActivityHandle[str]]] = []

        async def deliver(level: str) -> None:
            delivery = AlertDelivery(
                result_key=result.result_key,
                level=level,
                recipient_id=recipients[level],
                patient_id="" if unmatched else (context.fhir_patient_id or result.patient_id),
                loinc=result.loinc,
                urgency=assessment.urgency,
                summary=summary,
                workflow_id=wid,
                unmatched=unmatched,
            )
            receipt = await workflow.execute_activity_method(
                LabAlertActivities.deliver_alert, delivery, **retry_rules.LAB_NOTIFY.options()
            )
            self._status.deliveries.append(receipt)
            if not receipt.task_id and workflow.patched(OUTAGE_PATCH):
                # The push went out without its EHR Task: create the Task once the EHR is back,
                # without holding up the escalation clock.
                deferred.append((receipt, workflow.start_activity_method(
                    LabAlertActivities.alert_task, delivery, **retry_rules.LAB_TASK.options()
                )))  # fmt: skip

        alerted_at = self._status.alerted_at = workflow.now()
        for level in first:
            await deliver(level)
        if self._status.acknowledged is None:  # the acknowledgement may beat the delivery's completion
            self._stage(LabAlertStage.ALERTED)
        for after, level in escalations:
            if await self._acknowledged_by(alerted_at + after):
                break
            await deliver(level)
            if self._status.acknowledged is None:
                self._stage(LabAlertStage.ESCALATED)
        else:
            await self._acknowledged_by(alerted_at + ACK_GIVE_UP)
        if self._status.acknowledged is None:
            self._stage(LabAlertStage.UNACKNOWLEDGED)
        elif workflow.patched("audit-acknowledgement"):
            subject = context.audit_subject or (result.patient_id if context.ehr_available else None)
            await self._audit_acknowledgement(wid, subject)
        for receipt, pending in deferred:  # the EHR Tasks of pushes sent while the EHR was down
            try:
                receipt.task_id = await pending
            except ActivityError:  # the EHR stayed down past LAB_TASK's budget: the push went out
                workflow.logger.warning("alert task never reached the EHR", extra={"level": receipt.level})
        return LabAlertOutput(result_key=result.result_key, assessment=assessment, status=self._status)

    async def _audit_acknowledgement(self, wid: str, patient_id: str | None) -> None:
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
            **retry_rules.LAB_AUDIT.options(),
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
        self._stage(LabAlertStage.ACKNOWLEDGED)

    def _stage(self, stage: LabAlertStage) -> None:
        self._status.stage = stage
        if self._visible:  # ids and enums only: never PHI
            urgency = self._status.urgency.value if self._status.urgency else None
            workflow.upsert_search_attributes(sa.updates(stage.value, priority=urgency))

    @workflow.query(name="status")
    def status(self) -> LabAlertStatus:
        return self._status

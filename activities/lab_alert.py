"""Activities of the lab-alert pipeline: patient context from FHIR, two-step assessment, alert delivery.

Each is idempotent: reads are reads; the alert Task is a conditional create keyed by the step
(`step_key(workflow id, "alert-<level>")`, careflow/idempotency.py) and the push notification is
deduplicated by the same key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fhir import application_error
from careflow.audit.sink import AuditSink
from careflow.fhir.errors import FhirError
from careflow.idempotency import STEP_SYSTEM, step_identifier, step_key
from careflow.labs.rules import assess_rules, urgency_task
from careflow.llm.errors import GatewayError
from careflow.llm.gateway import Gateway
from careflow.llm.tasks import LabUrgency
from careflow.llm.teams import PIPELINES_TEAM
from careflow.llm.types import ProviderError, Tier
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType
from careflow.models.lab_alert import (
    PIPELINE,
    AlertDelivery,
    Assessment,
    AssessRequest,
    ContextRequest,
    DeliveryReceipt,
    PatientLabContext,
    RuleFinding,
    Urgency,
)
from careflow.notify.notifier import Notifier
from careflow.security.logging import get_logger

log = get_logger("careflow.lab_alert")

LOINC = "http://loinc.org"
ROLE_CODES = {"charge_nurse": "charge-nurse", "chief": "department-chief"}
HL7_FACILITY_SYSTEM = "urn:careflow:hl7-facility"
MRN_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


def _subject(d: AlertDelivery) -> dict[str, Any]:
    """Task.for: the EHR's Patient, or, unmatched, a logical reference by the MRN the lab sent (the
    EHR is the PHI store; the audit trail keeps only the keyed hash)."""
    if d.unmatched is None:
        return {"reference": f"Patient/{d.patient_id}"}
    return {
        "identifier": {"type": MRN_TYPE, "value": d.unmatched.mrn},
        "display": d.unmatched.describe(),
    }


class FhirSearch(Protocol):
    """The part of careflow.fhir.client.FhirClient these activities use."""

    async def search(
        self,
        resource_type: str,
        params: Mapping[str, str | Sequence[str]],
        *,
        request_id: str | None = None,
        workflow_id: str | None = None,
    ) -> list[dict[str, Any]]: ...

    async def conditional_create(
        self,
        resource: dict[str, Any],
        identifier: str,
        *,
        request_id: str | None = None,
        workflow_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]: ...


class UrgencyAssessor(Protocol):
    """The AI step: may raise the rules' urgency and writes the narrative; never lowers it."""

    async def assess(self, request: AssessRequest, finding: RuleFinding) -> Assessment: ...


class GatewayUrgencyAssessor:
    """The AI step through careflow's gateway (Efficient tier, the `lab_urgency` task).

    The AI is advisory: when the gateway cannot answer (providers down, budget blocked, invalid
    output), the rules' finding stands alone, so a critical result is never held back by the AI.
    """

    def __init__(self, gateway: Callable[[], Gateway], team_id: str = PIPELINES_TEAM) -> None:
        self._gateway = gateway
        self._team = team_id

    async def assess(self, request: AssessRequest, finding: RuleFinding) -> Assessment:
        task_input, evidence = urgency_task(request.result, request.context, finding)
        try:
            parsed, rec = await self._gateway().run_task(
                self._team,
                PIPELINE,
                Tier.EFFICIENT,
                task_input,
                evidence,
                request_id=step_key(request.workflow_id, "assess"),
                contains_phi=True,
            )
        except (GatewayError, ProviderError, ValidationError) as exc:
            log.warning(
                "ai assessment unavailable, rules stand",
                workflow_id=request.workflow_id,
                error=type(exc).__name__,
            )
            return Assessment(
                urgency=finding.urgency,
                rule_urgency=finding.urgency,
                reasons=finding.reasons,
                clinical_narrative="; ".join(finding.reasons),
                ai_engine=f"unavailable ({type(exc).__name__})",
            )
        assert isinstance(parsed, LabUrgency)
        return Assessment(
            urgency=Urgency(parsed.urgency),
            rule_urgency=finding.urgency,
            reasons=finding.reasons,
            clinical_narrative=parsed.clinical_narrative,
            suggested_action=parsed.suggested_action,
            ai_engine=f"{rec.provider}/{rec.model}",
        )


def _numeric(obs: dict[str, Any]) -> float | None:
    q = obs.get("valueQuantity") or {}
    v = q.get("value")
    return float(v) if isinstance(v, int | float) else None


def _ref_id(ref: dict[str, Any] | None, resource_type: str) -> str | None:
    value = (ref or {}).get("reference", "")
    return value.split("/", 1)[1] if value.startswith(f"{resource_type}/") else None


class LabAlertActivities:
    def __init__(
        self,
        fhir: FhirSearch,
        assessor: UrgencyAssessor,
        notifier: Notifier,
        audit: AuditSink,
        actor: str,
        pseudonym: Callable[[str, str], str],
    ) -> None:
        self._fhir = fhir
        self._assessor = assessor
        self._notifier = notifier
        self._audit = audit
        self._actor = actor
        self._pseudonym = pseudonym

    @activity.defn(name="lab.patient_context")
    async def patient_context(self, req: ContextRequest) -> PatientLabContext:
        try:
            return await self._patient_context(req)
        except FhirError as exc:
            raise application_error(exc) from None

    async def _patient_context(self, req: ContextRequest) -> PatientLabContext:
        since = (datetime.now(UTC) - timedelta(days=req.lookback_days)).date().isoformat()
        wid = activity.info().workflow_id
        # PID-3 carries the MRN; the EHR's Patient id is what FHIR searches take.
        matches = await self._fhir.search("Patient", {"identifier": req.patient_id}, workflow_id=wid)
        if len(matches) != 1:
            # Unknown MRN (or several Patients share it): nothing of the chart can be read, and a
            # guess would be wrong.  The alert still goes out, from what the message says.
            ctx = PatientLabContext(
                patient_matched=False,
                unmatched_key=self._pseudonym("mrn", req.patient_id),
                missing=[f"patient not matched in the EHR ({len(matches)} Patients with this MRN)"],
            )
            await self._roster(ctx, wid)
            return ctx
        patient_id = matches[0]["id"]
        ctx = PatientLabContext(fhir_patient_id=patient_id)
        observations = await self._fhir.search(
            "Observation",
            {
                "patient": patient_id,
                "code": f"{LOINC}|{req.loinc}",
                "date": f"ge{since}",
                "_sort": "-date",
                "_count": "20",
            },
            workflow_id=wid,
        )
        ctx.baseline = [v for v in (_numeric(o) for o in observations) if v is not None]
        if not ctx.baseline:
            ctx.missing.append("no prior results of this test in the lookback window")
        conditions = await self._fhir.search("Condition", {"patient": patient_id}, workflow_id=wid)
        ctx.condition_codes = sorted(
            {
                c["code"]
                for cond in conditions
                for c in (cond.get("code") or {}).get("coding", [])
                if c.get("code")
            }
        )
        encounters = await self._fhir.search(
            "Encounter", {"patient": patient_id, "_sort": "-date", "_count": "5"}, workflow_id=wid
        )
        for enc in encounters:
            for part in enc.get("participant", []):
                ctx.physician_id = ctx.physician_id or _ref_id(part.get("individual"), "Practitioner")
        if ctx.physician_id is None:
            ctx.missing.append("no responsible physician on a recent encounter")
        await self._roster(ctx, wid)
        return ctx

    async def _roster(self, ctx: PatientLabContext, wid: str | None) -> None:
        """Who an alert escalates to: the charge nurse and the department chief on the roster."""
        for level, code in ROLE_CODES.items():
            roles = await self._fhir.search(
                "PractitionerRole", {"code": code, "_count": "1"}, workflow_id=wid
            )
            pid = _ref_id(roles[0].get("practitioner"), "Practitioner") if roles else None
            setattr(ctx, f"{level}_id", pid)
            if pid is None:
                ctx.missing.append(f"no {code} on the roster")

    @activity.defn(name="lab.assess")
    async def assess(self, req: AssessRequest) -> Assessment:
        finding = assess_rules(req.result, req.context)
        ai = await self._assessor.assess(req, finding)
        # An inference over PHI is an audited access, whoever (or whatever) made it.
        await self._audit.record(
            AuditEvent(
                event_type=AuditEventType.AI_INFERENCE,
                actor=self._actor,
                action=AuditAction.EXECUTE,
                patient_id=req.context.audit_subject,  # never the raw MRN of an unmatched patient
                resource_type="Observation",
                request_id=step_key(req.workflow_id, "assess"),
                workflow_id=req.workflow_id,
                detail={"task": "lab_urgency", "engine": ai.ai_engine, "rule_urgency": finding.urgency.value},
            )
        )
        # Safety floor: the AI may escalate a result, never de-escalate what the rules found.
        urgency = ai.urgency if ai.urgency.rank > finding.urgency.rank else finding.urgency
        return ai.model_copy(
            update={"urgency": urgency, "rule_urgency": finding.urgency, "reasons": finding.reasons}
        )

    @activity.defn(name="lab.deliver_alert")
    async def deliver_alert(self, d: AlertDelivery) -> DeliveryReceipt:
        """The alert Task in the EHR, then the push.  The push never waits for the EHR: when the EHR
        cannot take the Task, the push goes out without it and the receipt says so (task_id ""), and
        the workflow creates the Task later (`alert_task`)."""
        task_id = ""
        try:
            task_id = await self._create_task(d)
        except ApplicationError as exc:
            if exc.non_retryable:
                raise
            log.warning(
                "alert task deferred: the EHR is unavailable", workflow_id=d.workflow_id, level=d.level
            )
        sent = await self._notifier.send(
            dedup_key=step_key(d.workflow_id, f"alert-{d.level}"),
            kind=PIPELINE,
            recipient_id=d.recipient_id,
            workflow_id=d.workflow_id,
            body={
                "kind": "critical-lab-result",
                "level": d.level,
                "task": f"Task/{task_id}" if task_id else None,
                "workflow_id": d.workflow_id,
                "urgency": d.urgency.value,
                "summary": d.summary,
            },
        )
        return DeliveryReceipt(level=d.level, task_id=task_id, notified=sent.delivered)

    @activity.defn(name="lab.alert_task")
    async def alert_task(self, d: AlertDelivery) -> str:
        """The alert's Task, for a delivery whose push went out while the EHR was down."""
        return await self._create_task(d)

    async def _create_task(self, d: AlertDelivery) -> str:
        step = f"alert-{d.level}"
        task: dict[str, Any] = {
            "resourceType": "Task",
            "identifier": [{"system": STEP_SYSTEM, "value": step_key(d.workflow_id, step)}],
            "status": "requested",
            "intent": "order",
            "priority": "stat",
            "code": {"text": "Acknowledge critical laboratory result"},
            "for": _subject(d),
            "authoredOn": datetime.now(UTC).isoformat(),
            "description": d.summary,
            "input": [
                {"type": {"text": "loinc"}, "valueString": d.loinc},
                {"type": {"text": "escalation-level"}, "valueString": d.level},
            ],
        }
        if d.recipient_id:
            task["owner"] = {"reference": f"Practitioner/{d.recipient_id}"}
        elif d.level == "lab" and d.unmatched is not None:
            task["owner"] = {
                "identifier": {"system": HL7_FACILITY_SYSTEM, "value": d.unmatched.facility},
                "display": f"Laboratory {d.unmatched.facility}".strip(),
            }
        try:
            created, _ = await self._fhir.conditional_create(
                task, step_identifier(d.workflow_id, step), workflow_id=d.workflow_id
            )
        except FhirError as exc:
            raise application_error(exc) from None
        return str(created.get("id"))

"""The steps AmbientNoteWorkflow takes more than once or hands off whole (workflow code: deterministic,
activities through `retry_rules`): waiting for a person until a deadline, a notice, the audit of a
decision, and the SOAP note's draft from the AI gateway."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.ambient import AmbientActivities
    from activities.audit import AuditActivities, RecordAuditInput
    from activities.llm import DraftInput, LlmActivities
    from careflow.ambient.note import TEMPLATES
    from careflow.ambient.review import decision_event
    from careflow.idempotency import step_key
    from careflow.llm.tasks import SoapNoteInput
    from careflow.llm.teams import PIPELINES_TEAM
    from careflow.llm.types import Evidence, Tier
    from careflow.models.ambient import PIPELINE, EncounterContext, NoticeRequest, Specialty
    from workflows import retry_rules


async def until(done: Callable[[], bool], at: datetime) -> bool:
    """Wait for `done` until `at`: True if it came."""
    if done():
        return True
    timeout = (at - workflow.now()).total_seconds()
    if timeout <= 0:
        return False
    try:
        await workflow.wait_condition(done, timeout=timeout)
    except TimeoutError:
        return False
    return True


async def notice(kind: str, step: str, to: str, detail: str) -> None:
    """A reminder or escalation (no PHI: ids and minutes), once per step however often retried."""
    wid = workflow.info().workflow_id
    req = NoticeRequest(workflow_id=wid, kind=kind, step=step, recipient_id=to, detail=detail)
    await retry_rules.execute(retry_rules.AMBIENT_STEP, AmbientActivities.notice, req)


async def audit(action: str, actor: str, resource_type: str, resource_id: str) -> None:
    """A person's decision in the audit trail, keyed by workflow id + action."""
    wid = workflow.info().workflow_id
    event = decision_event(action, actor, resource_type, resource_id, wid, workflow.now())
    await retry_rules.execute(
        retry_rules.AMBIENT_STEP, AuditActivities.record, RecordAuditInput(event=event, step=action)
    )


@dataclass(frozen=True)
class Drafted:
    note: dict[str, Any] | None  # the gateway's SoapNote; None when it could not draft in its budget
    engine: str = ""  # provider/model
    reason: str = ""


async def draft(ctx: EncounterContext, text: str, specialty: Specialty, encounter_id: str) -> Drafted:
    """The SOAP note from the de-identified transcript, the specialty's template and the patient's coded
    conditions as evidence."""
    evidence = [Evidence(id="transcript", kind="transcript", title="Encounter transcript", text=text)]
    evidence += [
        Evidence(id=c.id, kind="fhir", title=c.display, text=f"{c.display} (ICD-10-CM {c.code})")
        for c in ctx.conditions
    ]
    task = SoapNoteInput(
        specialty=specialty.value, encounter_id=encounter_id, template=list(TEMPLATES[specialty])
    )
    req = DraftInput.of(
        task,
        team_id=PIPELINES_TEAM,
        use_case=PIPELINE,
        tier=Tier.FRONTIER,
        evidence=evidence,
        request_id=step_key(workflow.info().workflow_id, "draft"),
        patient_id=ctx.patient_id,
    )
    try:
        out = await retry_rules.execute(retry_rules.AMBIENT_DRAFT, LlmActivities.draft, req)
    except ActivityError as err:
        return Drafted(
            None, reason=f"the AI gateway could not draft the note: {getattr(err.cause, 'message', err)}"
        )
    return Drafted(out.output, f"{out.provider}/{out.model}")

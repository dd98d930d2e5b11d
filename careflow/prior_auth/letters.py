"""The justification letter: the pre-filled template staff complete when the AI draft failed, the AI
draft read from the gateway's validated output, the evidence the drafter is given, and the markdown
that goes into the draft's DocumentReference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from careflow.idempotency import step_key
from careflow.llm.tasks import PaJustification, PaJustificationInput
from careflow.llm.types import Evidence
from careflow.models.prior_auth import (
    ContextPart,
    CriterionRow,
    Draft,
    NotifyRequest,
    OrderInfo,
    RosterMember,
)
from careflow.prior_auth.metrics import criteria_counts
from careflow.prior_auth.missing import TEMPLATE


def template_draft(
    order: OrderInfo, context: list[ContextPart], criteria: list[str], missing: list[str], revision: int
) -> Draft:
    """The pre-filled template staff complete when the AI draft failed: facts copied from the order and
    the record summaries, every payer criterion left `unknown` for the reviewer to judge."""
    conditions = [e for p in context if p.resource_type == "Condition" for e in p.entries]
    treatments = [
        e for p in context if p.resource_type in ("MedicationRequest", "Procedure") for e in p.entries
    ]
    diagnoses = ", ".join(f"{d.display or d.code} ({d.code})" for d in order.diagnoses) or "[diagnosis]"
    lines = [
        "To: the payer, utilization management",
        f"Re: Prior authorization request for {order.requested_item} (order {order.order_id})",
        "",
        "TEMPLATE: the AI draft was unavailable. Complete every [bracketed] part before approving.",
        "",
        f"We request prior authorization of {order.requested_item} for this patient, "
        f"diagnosed with {diagnoses}.",
        "",
        "Diagnoses on record:",
        *([f"- {e.summary} [{e.reference}]" for e in conditions] or ["- [none found: add]"]),
        "",
        "Prior and current treatments:",
        *([f"- {e.summary} [{e.reference}]" for e in treatments] or ["- [none found: add]"]),
        "",
        "Payer criteria:",
        *([f"- {c}: [met / not met: cite the record]" for c in criteria] or ["- [payer criteria: add]"]),
        "",
        "[Clinical rationale]",
    ]
    return Draft(
        revision=revision,
        letter="\n".join(lines),
        criteria=[CriterionRow(criterion=c, status="unknown") for c in criteria],
        citations=[e.reference for e in conditions + treatments],
        missing_information=[*missing, TEMPLATE],
        template=True,
        model="template",
        model_version="1",
    )


def ai_draft(
    output: dict[str, Any],
    provider: str | None,
    model: str | None,
    request_id: str,
    missing: list[str],
    revision: int,
) -> Draft:
    """The gateway's validated `pa_justification` output as a draft; what the workflow found missing
    comes first, the drafter's own findings after it (each once)."""
    parsed = PaJustification.model_validate(output)
    return Draft(
        revision=revision,
        letter=parsed.letter,
        criteria=[CriterionRow(**c.model_dump()) for c in parsed.criteria],
        citations=parsed.citations,
        missing_information=list(dict.fromkeys([*missing, *parsed.missing_information])),
        model=f"{provider}/{model}",
        model_version=model or "",
        request_id=request_id,
    )


def context_evidence(context: Sequence[ContextPart]) -> list[Evidence]:
    """The record summaries as evidence the drafter cites by reference."""
    return [
        Evidence(id=e.reference, kind="fhir", title=p.resource_type, text=e.summary)
        for p in context
        for e in p.entries
    ]


def document_body(draft: Draft) -> str:
    """The draft for the reviewer: the letter, the criteria table and what is missing (markdown)."""
    table = "\n".join(
        ["| Payer criterion | Status | Evidence |", "|---|---|---|"]
        + [f"| {c.criterion} | {c.status} | {', '.join(c.evidence_ids)} |" for c in draft.criteria]
    )
    missing = "\n".join(f"- {m}" for m in draft.missing_information) or "- none"
    return f"{draft.letter}\n\n## Payer criteria\n\n{table}\n\n## Missing information\n\n{missing}\n"


def review_summary(item_code: str, draft: Draft) -> str:
    """The notification's PHI-free line: the item's code and the criteria counts."""
    met = criteria_counts(draft.criteria)["met"]
    return (
        f"Prior authorization draft for {item_code}: {met} of {len(draft.criteria)} "
        f"payer criteria met{' (template)' if draft.template else ''}."
    )


def justification_input(
    order: OrderInfo, payer: str | None, criteria: list[str], comments: str
) -> PaJustificationInput:
    """The `pa_justification` task's input: the item, the payer's criteria and the reviewer's comments."""
    return PaJustificationInput(
        requested_item=order.requested_item,
        payer=payer or "",
        order_id=order.order_id,
        criteria=criteria,
        reviewer_comments=comments,
    )


def draft_request_id(workflow_id: str, revision: int) -> str:
    """The gateway request id of a revision's draft: one per revision (the first has no suffix)."""
    return step_key(workflow_id, f"draft-r{revision}" if revision else "draft")


def notification(
    step: str, kind: str, to: RosterMember | None, task_id: str, order: OrderInfo, draft: Draft
) -> NotifyRequest:
    """A notification about a review Task, with a PHI-free summary of the draft."""
    return NotifyRequest(
        step=step,
        kind=kind,
        recipient_ref=to.practitioner_ref if to else None,
        task_id=task_id,
        order_id=order.order_id,
        summary=review_summary(order.item.code, draft),
    )

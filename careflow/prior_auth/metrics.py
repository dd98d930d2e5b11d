"""What the pipeline measures: the reviewer's edit size, time to draft and time in review, and how
many payer criteria a draft marks met, not met or unknown."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from careflow.models.prior_auth import (
    CriterionRow,
    Draft,
    MetricsRecord,
    OrderInfo,
    PriorAuthStatus,
    Priority,
)

CRITERION_STATUSES = ("met", "not_met", "unknown")


def edit_size(draft: str | None, final: str | None) -> int:
    """Characters the reviewer changed (inserted + deleted) between the draft and the approved text."""
    if draft is None or final is None or draft == final:
        return 0
    changed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, draft, final, autojunk=False).get_opcodes():
        if tag != "equal":
            changed += (i2 - i1) + (j2 - j1)
    return changed


def criteria_counts(criteria: Sequence[CriterionRow]) -> dict[str, int]:
    """{"met": n, "not_met": n, "unknown": n}."""
    return {s: sum(1 for c in criteria if c.status == s) for s in CRITERION_STATUSES}


def seconds_to_draft(m: MetricsRecord) -> float | None:
    return (m.draft_ready_at - m.started_at).total_seconds() if m.draft_ready_at else None


def seconds_in_review(m: MetricsRecord) -> float | None:
    if m.decided_at and m.draft_ready_at:
        return (m.decided_at - m.draft_ready_at).total_seconds()
    return None


def edit_chars(m: MetricsRecord) -> int | None:
    """The reviewer's edit size; None until there is an approved text."""
    return edit_size(m.draft_letter, m.final_letter) if m.final_letter is not None else None


def metrics_record(
    workflow_id: str,
    tenant_id: str,
    order: OrderInfo,
    status: PriorAuthStatus,
    priority: Priority,
    draft: Draft,
    final_letter: str | None,
    outcome: str,
) -> MetricsRecord:
    """The run's metrics row at a milestone; the draft's text travels only when there is an approved
    text to measure the reviewer's edits against."""
    if status.received_at is None:
        raise ValueError("the run has no start time")
    return MetricsRecord(
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        order_id=order.order_id,
        item_code=order.item.code,
        payer=status.payer,
        priority=priority,
        started_at=status.received_at,
        draft_ready_at=status.draft_ready_at,
        decided_at=status.decided_at,
        outcome=outcome,
        revisions=draft.revision,
        template_used=draft.template,
        draft_letter=draft.letter if final_letter is not None else None,
        final_letter=final_letter,
    )

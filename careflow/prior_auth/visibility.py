"""The PHI-free summary of a prior-auth run that goes in its memo: codes, counts and flags only."""

from __future__ import annotations

from typing import Any

from careflow.models.prior_auth import PayerOutcome, PriorAuthStatus, Priority, Stage
from careflow.prior_auth.metrics import criteria_counts

# The stage a payer's answer moves the run to.
PAYER_STAGE: dict[str, Stage] = {"approved": Stage.APPROVED, "denied": Stage.DENIED, "pended": Stage.PENDED}


def payer_stage(outcome: PayerOutcome) -> Stage:
    return PAYER_STAGE[outcome.outcome]


def memo_summary(
    pipeline: str, stage: Stage, status: PriorAuthStatus, item_code: str | None, priority: Priority
) -> dict[str, Any]:
    met = criteria_counts(status.criteria)["met"]
    return {
        "pipeline": pipeline,
        "stage": stage.value,
        "item": item_code,
        "payer": status.payer,
        "priority": priority.value,
        "criteria_met": f"{met}/{len(status.criteria)}",
        "missing_information": len(status.missing_information),
        "partial_context": status.partial_context,
        "template": status.template,
        "revision": status.revision,
    }

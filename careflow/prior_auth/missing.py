"""What the reviewer is told is missing: the gaps the pipeline itself found (PHI-free, shown with the
draft and in the run's status), as opposed to those the drafter reports about the record."""

from __future__ import annotations

from collections.abc import Sequence

ORDER_NOT_FOUND = "The order was not found in the EHR (or names no coded item)."
NO_PAYER = "No payer on the patient's coverage: the payer must be confirmed."
KB_UNAVAILABLE = "The knowledge base was unavailable: payer criteria and guidelines unknown."
TEMPLATE = "AI draft unavailable: pre-filled template, criteria to be assessed."


def partial_context(resource_types: Sequence[str]) -> str:
    return f"Partial patient context: the EHR did not return {', '.join(resource_types)} within 30 minutes."


def no_criteria(requested_item: str) -> str:
    return (
        f"No payer policy criteria for {requested_item} were found in the knowledge base: "
        "the criteria must be checked against the payer's policy by hand."
    )


def no_guideline(requested_item: str) -> str:
    return f"No clinical guideline on {requested_item} in the knowledge base."


def submission_refused(failure_type: str | None) -> str:
    """The payer (or the claim's own data) refused an approved request: it goes in by hand."""
    return f"Payer submission refused ({failure_type or 'error'}): staff must submit by hand."

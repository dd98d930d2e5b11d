"""Models of the prior-authorization pipeline (seed P2, P16): one workflow per order, `prior-auth-<order>`.

Workflow state keeps ids, codes and short code displays; the record itself stays in the EHR.  The draft
letter travels in payloads (encrypted by careflow's codec) because the reviewer must see it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from careflow.llm.types import Evidence

CONTEXT_TYPES = ("Patient", "Encounter", "Condition", "MedicationRequest", "Procedure", "Coverage")
# Workflows started after patch `pa-observation-context` also read the measurements payer criteria
# name (HbA1c >= 7 %, BMI >= 30, eGFR < 30): only these LOINC codes, only the latest of each.
OBSERVATION_CONTEXT = "Observation"
PA_MEASUREMENTS: dict[str, str] = {
    "4548-4": "HbA1c",
    "39156-5": "BMI",
    "33914-3": "eGFR",
    "62238-1": "eGFR",
    "98979-8": "eGFR",
    "2160-0": "Creatinine",
    "13457-7": "LDL cholesterol",
    "18262-6": "LDL cholesterol",
    "718-7": "Hemoglobin",
    "10230-1": "LVEF",
}
PA_REVIEW_ROLES = ("pa-staff", "pa-supervisor")

ReviewActionName = Literal["approve", "reject", "request_changes"]

PIPELINE = "prior-auth"  # the CareflowPipeline search attribute, the gateway use case, metrics labels
WORKFLOW_ID_PREFIX = "prior-auth-"


def workflow_id(order_id: str) -> str:
    """One workflow per order: the id is the business key (ids only, never names: PHI-free)."""
    return f"{WORKFLOW_ID_PREFIX}{order_id}"


class Priority(StrEnum):
    STANDARD = "standard"
    EXPEDITED = "expedited"


class Stage(StrEnum):
    RECEIVED = "received"
    EXTRACTING = "extracting"
    RETRIEVING = "retrieving"
    DRAFTING = "drafting"
    AWAITING_REVIEW = "awaiting_review"
    REGENERATING = "regenerating"
    SUBMITTING = "submitting"  # approved by staff, on its way to the payer
    PENDED = "pended"  # the payer has not decided yet; followed up
    APPROVED = "approved"  # the payer approved
    DENIED = "denied"  # the payer denied
    REJECTED = "rejected"  # staff rejected the draft: nothing submitted
    EXPIRED = "expired"  # the payer decision deadline passed in review
    SUBMISSION_FAILED = "submission_failed"  # approved, but the payer refused the request: staff follow up
    ORDER_NOT_FOUND = "order_not_found"

    @property
    def drafting(self) -> bool:
        """Still working on a draft; any other stage has one ready (or ended without one)."""
        return self in _DRAFTING

    @property
    def payer_answered(self) -> bool:
        return self in (Stage.APPROVED, Stage.DENIED, Stage.PENDED)


_DRAFTING = frozenset(
    {Stage.RECEIVED, Stage.EXTRACTING, Stage.RETRIEVING, Stage.DRAFTING, Stage.REGENERATING}
)


class PriorAuthInput(BaseModel):
    order_id: str
    tenant_id: str = "default"
    priority: Priority = Priority.STANDARD
    # False only on a server without careflow's search attributes (the time-skipping test server).
    search_attributes: bool = True


class Code(BaseModel):
    system: str
    code: str
    display: str = ""


class OrderInfo(BaseModel):
    """The order under prior authorization: references and codes only."""

    order_id: str
    reference: str  # "MedicationRequest/<id>" | "ServiceRequest/<id>"
    patient_ref: str  # "Patient/<id>"
    item: Code  # RxNorm ingredient or CPT code of the requested drug or service
    diagnoses: list[Code] = Field(default_factory=list)  # the order's reasons (ICD-10-CM)
    requester_ref: str | None = None
    encounter_ref: str | None = None
    coverage_ref: str | None = None

    @property
    def requested_item(self) -> str:
        return f"{self.item.display or self.item.code} ({self.item.code})"


class ContextRequest(BaseModel):
    patient_ref: str
    resource_type: str  # one of CONTEXT_TYPES or OBSERVATION_CONTEXT


class ContextEntry(BaseModel):
    """One EHR resource as the drafter sees it: its reference and a minimal coded summary."""

    reference: str  # "Condition/123"
    summary: str


class ContextPart(BaseModel):
    resource_type: str
    entries: list[ContextEntry] = Field(default_factory=list)
    payer_ref: str | None = None  # Coverage only: the payer Organization
    payer_name: str | None = None


class EvidenceRequest(BaseModel):
    tenant_id: str
    requested_item: str
    item_code: str
    diagnoses: list[str]  # code displays of the order's reasons
    k: int = 6


class ClinicalEvidence(BaseModel):
    criteria: list[str] = Field(default_factory=list)  # the payer's criteria, verbatim
    policy_document: str | None = None  # "document_id@vN" of the payer policy the criteria come from
    evidence: list[Evidence] = Field(default_factory=list)  # knowledge-base chunks as evidence
    missing_information: list[str] = Field(default_factory=list)


class CriterionRow(BaseModel):
    criterion: str
    status: Literal["met", "not_met", "unknown"]
    evidence_ids: list[str] = Field(default_factory=list)


class Draft(BaseModel):
    revision: int  # 0 = first draft; +1 per request_changes
    letter: str
    criteria: list[CriterionRow] = Field(default_factory=list)
    citations: list[str] = Field(default_factory=list)
    missing_information: list[str] = Field(default_factory=list)
    template: bool = False  # True: the AI draft failed; staff fill in a pre-filled template
    model: str = ""  # provider/model that wrote it ("template" when none did)
    model_version: str = ""
    request_id: str = ""


class RosterMember(BaseModel):
    practitioner_ref: str  # "Practitioner/<id>"
    role_ref: str  # "PractitionerRole/<id>"
    role: str  # "pa-staff" | "pa-supervisor"


class ReviewRoster(BaseModel):
    members: list[RosterMember] = Field(default_factory=list)

    def holds_review_role(self, reviewer_id: str) -> bool:
        ref = reviewer_ref(reviewer_id)
        return any(m.practitioner_ref == ref for m in self.members)

    def of_role(self, role: str) -> list[RosterMember]:
        return [m for m in self.members if m.role == role]


def reviewer_ref(reviewer_id: str) -> str:
    """Reviewers may be named by bare Practitioner id or by reference; the roster holds references."""
    return reviewer_id if "/" in reviewer_id else f"Practitioner/{reviewer_id}"


class PublishDraftRequest(BaseModel):
    order: OrderInfo
    draft: Draft
    assignee: RosterMember | None
    priority: Priority
    document_reference_id: str | None = None  # set from the second revision on: update in place


class ReviewRecords(BaseModel):
    document_reference_id: str
    task_id: str


class EscalationRequest(BaseModel):
    order: OrderInfo
    review_task_id: str
    supervisor: RosterMember | None


class NotifyRequest(BaseModel):
    step: str  # dedup key is workflow id + step
    kind: str  # "pa-review" | "pa-reminder" | "pa-escalation"
    recipient_ref: str | None
    task_id: str
    order_id: str
    summary: str  # PHI-free: item and criteria counts


class CloseReviewRequest(BaseModel):
    outcome: Literal["approved", "rejected", "expired"]
    document_reference_id: str
    task_ids: list[str]
    final_letter: str | None = None  # approved: the text that becomes the final document
    reviewer_ref: str | None = None


class ReviewAction(BaseModel):
    """Body of the `approve` / `reject` / `request_changes` signals."""

    reviewer_id: str
    comments: str = ""
    edited_letter: str | None = None


class ReviewRequest(ReviewAction):
    """Body of the `review` update."""

    action: ReviewActionName


class ReviewOutcome(BaseModel):
    accepted: bool
    action: ReviewActionName
    stage: str


class ReviewDecision(BaseModel):
    action: ReviewActionName
    reviewer_ref: str
    comments: str = ""
    edited_letter: str | None = None
    at: datetime
    revision: int  # the draft revision acted on
    via: Literal["signal", "update"]


class PayerSubmission(BaseModel):
    """What the payer activity gets: the approval travels with it and is checked again there."""

    approval: ReviewDecision
    order: OrderInfo
    priority: Priority
    payer_ref: str | None
    payer_name: str | None
    document_reference_id: str
    letter: str
    criteria: list[CriterionRow]


class PayerInquiry(BaseModel):
    claim_response_id: str
    order_id: str


class PayerOutcome(BaseModel):
    outcome: Literal["approved", "pended", "denied"]
    claim_response_id: str
    preauth_ref: str | None = None
    disposition: str = ""
    at: datetime | None = None


class MetricsRecord(BaseModel):
    workflow_id: str
    tenant_id: str
    order_id: str
    item_code: str
    payer: str | None
    priority: Priority
    started_at: datetime
    draft_ready_at: datetime | None = None
    decided_at: datetime | None = None
    outcome: str  # awaiting_review | approved | denied | pended | rejected | expired
    revisions: int = 0
    template_used: bool = False
    draft_letter: str | None = None  # to measure the reviewer's edit size (not stored)
    final_letter: str | None = None


class PriorAuthStatus(BaseModel):
    stage: Stage = Stage.RECEIVED
    order_id: str = ""
    priority: Priority = Priority.STANDARD
    received_at: datetime | None = None
    draft_ready_at: datetime | None = None
    decided_at: datetime | None = None
    submitted_at: datetime | None = None
    deadline: datetime | None = None
    missing_information: list[str] = Field(default_factory=list)
    partial_context: bool = False
    missing_resource_types: list[str] = Field(default_factory=list)
    criteria: list[CriterionRow] = Field(default_factory=list)
    revision: int = 0
    template: bool = False
    document_reference_id: str | None = None
    task_id: str | None = None
    escalation_task_id: str | None = None
    reminded: bool = False
    escalated: bool = False
    decision: ReviewDecision | None = None
    ignored_actions: int = 0
    payer: str | None = None
    payer_outcome: PayerOutcome | None = None


class PriorAuthOutput(BaseModel):
    order_id: str
    status: PriorAuthStatus

"""careflow.prior_auth's pure functions: policy criteria, record summaries, the template letter, the FHIR
resources the pipeline writes, metrics, review rules and deadlines.  No servers.

The measurement summaries and `latest_measurements` are in test_pa_context.py; whole runs (signals,
updates, timers, outages) in test_prior_auth_workflow.py.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from careflow.fhir import codes
from careflow.fhir.resources import validate_resource
from careflow.models.audit import AuditEventType, AuditOutcome
from careflow.models.prior_auth import (
    Code,
    ContextEntry,
    ContextPart,
    CriterionRow,
    Draft,
    MetricsRecord,
    OrderInfo,
    PayerOutcome,
    PayerSubmission,
    PriorAuthStatus,
    Priority,
    ReviewDecision,
    ReviewRecords,
    ReviewRequest,
    ReviewRoster,
    RosterMember,
    Stage,
)
from careflow.payer.pas import CAREFLOW_SUPPORTING_INFO, CRITERIA_SUMMARY
from careflow.prior_auth import criteria, deadlines, letters, metrics, missing, resources, review, summaries
from careflow.prior_auth.visibility import memo_summary, payer_stage

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
STAFF = RosterMember(practitioner_ref="Practitioner/s1", role_ref="PractitionerRole/r1", role="pa-staff")
SUPERVISOR = RosterMember(
    practitioner_ref="Practitioner/sup1", role_ref="PractitionerRole/r9", role="pa-supervisor"
)
ROSTER = ReviewRoster(members=[STAFF, SUPERVISOR])

ORDER = OrderInfo(
    order_id="ord-42",
    reference="MedicationRequest/mr-7",
    patient_ref="Patient/p-3",
    item=Code(system=codes.RXNORM, code="1991302", display="semaglutide"),
    diagnoses=[Code(system=codes.ICD10CM, code="E11.9", display="Type 2 diabetes mellitus")],
    requester_ref="Practitioner/pcp-1",
    encounter_ref="Encounter/enc-5",
    coverage_ref="Coverage/cov-1",
)

POLICY_TEXT = """## 2 Coverage criteria

A personal CGM is covered when criteria 1, 2 and 4 are met and criterion 3 is met.

Criterion 1: The patient has diabetes mellitus documented with an ICD-10-CM code
in category E10 (type 1), E11 (type 2) or E13.

Criterion 2: The patient or caregiver has been trained to use the CGM.
criterion 3 : The patient is treated with insulin.

Coverage continues when the patient has a visit every 6 months."""


# -- policy criteria -------------------------------------------------------------------------------
def test_criteria_are_numbered_paragraphs_without_their_labels() -> None:
    assert criteria.criteria_of(POLICY_TEXT) == [
        (1, "The patient has diabetes mellitus documented with an ICD-10-CM code in category E10 (type 1), "
            "E11 (type 2) or E13."),
        (2, "The patient or caregiver has been trained to use the CGM."),
        (3, "The patient is treated with insulin."),
    ]  # fmt: skip
    assert criteria.criteria_of("Coverage overview: no numbered criteria here.\n\nCriterion: none") == []


def test_a_policy_covers_the_item_its_title_names_by_name_or_code() -> None:
    assert criteria.names_item("Prior Authorization Policy: Semaglutide", "semaglutide (1991302)", "1991302")
    assert criteria.names_item("GLP-1 agonists (RxNorm 1991302)", "Ozempic (1991302)", "1991302")
    assert not criteria.names_item("Continuous Glucose Monitors (E2103)", "semaglutide (1991302)", "1991302")


@dataclass(frozen=True)
class Chunk:
    document_id: str
    document_title: str
    version: str
    text: str


def test_the_best_ranked_covering_policy_gives_its_criteria_once_each_in_policy_order() -> None:
    chunks = [
        Chunk("cgm", "Policy: Continuous Glucose Monitors", "2", "Criterion 1: CGM criterion."),
        Chunk("glp1", "Policy: Semaglutide for type 2 diabetes", "3", "Criterion 2: BMI of 30 or more."),
        Chunk("glp1", "Policy: Semaglutide for type 2 diabetes", "3", "Overview of GLP-1 agonists."),
        Chunk("glp1", "Policy: Semaglutide for type 2 diabetes", "3", "Criterion 1: Type 2 diabetes.\n"
              "Criterion 2: BMI of 30 or more."),
        Chunk("glp1", "Policy: Semaglutide for type 2 diabetes", "2", "Criterion 3: an older version."),
    ]  # fmt: skip
    found = criteria.policy_criteria(chunks, "semaglutide (1991302)", "1991302")
    assert found.document == "glp1@v3"
    assert found.criteria == ["Type 2 diabetes.", "BMI of 30 or more."]
    assert found.chunks == [chunks[1], chunks[3]]  # the overview holds no criterion: not evidence
    assert (
        criteria.policy_criteria(chunks[:1], "semaglutide (1991302)", "1991302") == criteria.PolicyCriteria()
    )


def test_the_evidence_request_names_the_item_and_the_diagnoses() -> None:
    req = criteria.evidence_request("t1", ORDER)
    assert (req.tenant_id, req.requested_item, req.item_code) == ("t1", "semaglutide (1991302)", "1991302")
    assert req.diagnoses == ["Type 2 diabetes mellitus"]
    query = criteria.policy_query(req.requested_item, req.item_code, req.diagnoses)
    assert (
        query
        == "prior authorization coverage criteria for semaglutide (1991302) 1991302; Type 2 diabetes mellitus"
    )


# -- record summaries ------------------------------------------------------------------------------
def concept(system: str, code: str, display: str = "", text: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text is not None:
        c["text"] = text
    return c


def test_summaries_keep_codes_statuses_and_dates_only() -> None:
    condition = {
        "resourceType": "Condition",
        "id": "c1",
        "clinicalStatus": concept(codes.CONDITION_CLINICAL, "active", "Active"),
        "code": concept(codes.ICD10CM, "E11.9", "Type 2 diabetes mellitus without complications"),
        "onsetDateTime": "2019-04-12T00:00:00Z",
        "note": [{"text": "free text the drafter must not see"}],
    }
    assert summaries.summarise(condition) == (
        "Condition: Type 2 diabetes mellitus without complications (E11.9); Active (active); "
        "onset 2019-04-12."
    )
    med = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "medicationCodeableConcept": concept(codes.RXNORM, "860975", "metformin 500 MG", text="Metformin"),
        "authoredOn": "2024-01-05",
        "reasonCode": [concept(codes.ICD10CM, "E11.9", "T2DM")],
    }
    assert summaries.summarise(med) == (
        "MedicationRequest: Metformin (860975), active, authored 2024-01-05, for T2DM (E11.9)."
    )
    procedure = {"resourceType": "Procedure", "status": "completed", "code": concept(codes.CPT, "43644"),
                 "performedPeriod": {"start": "2021-06-01T10:00:00Z"}}  # fmt: skip
    assert summaries.summarise(procedure) == "Procedure: 43644, completed, 2021-06-01."
    assert summaries.summarise(
        {"resourceType": "Patient", "gender": "female", "birthDate": "1961-08-30"}
    ) == ("Patient: female sex, born 1961.")
    assert summaries.summarise(
        {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
    ) == ("Encounter: AMB finished, date not recorded.")
    assert summaries.summarise({"resourceType": "Flag"}) == "Flag."


def test_the_order_becomes_references_and_codes() -> None:
    order = {
        "resourceType": "MedicationRequest",
        "id": "mr-7",
        "subject": {"reference": "Patient/p-3"},
        "medicationCodeableConcept": {
            "coding": [{"system": codes.RXNORM, "code": "1991302"}],
            "text": "Ozempic",
        },
        "reasonCode": [
            concept(codes.ICD10CM, "E11.9", "T2DM"),
            concept(codes.SNOMED, "44054006", "Diabetes"),
        ],
        "requester": {"reference": "Practitioner/pcp-1"},
        "insurance": [{"reference": "Coverage/cov-1"}, {"reference": "Coverage/cov-2"}],
    }
    info = summaries.order_info("ord-42", order)
    assert info.reference == "MedicationRequest/mr-7" and info.patient_ref == "Patient/p-3"
    assert info.item == Code(system=codes.RXNORM, code="1991302", display="Ozempic (1991302)")
    assert [d.code for d in info.diagnoses] == ["E11.9"]  # ICD-10-CM only
    assert (info.requester_ref, info.coverage_ref, info.encounter_ref) == (
        "Practitioner/pcp-1",
        "Coverage/cov-1",
        None,
    )
    with pytest.raises(summaries.OrderNotCoded):
        summaries.order_info("ord-1", {**order, "medicationCodeableConcept": {"text": "something"}})


def test_the_payer_is_that_of_active_coverage() -> None:
    coverages = [
        {"status": "cancelled", "payor": [{"reference": "Organization/old"}]},
        {"status": "active", "payor": [{"reference": "Organization/aetna"}]},
    ]
    assert summaries.payer_refs(coverages) == ["Organization/aetna"]
    assert summaries.payer_refs(coverages[:1]) == ["Organization/old"]  # none active: whatever there is
    part = ContextPart(resource_type="Coverage", payer_ref="Organization/aetna", payer_name="")
    assert summaries.coverage_payer([part]) == ("Organization/aetna", None)
    assert summaries.coverage_payer([]) == (None, None)


# -- letters -----------------------------------------------------------------------------------------
CONTEXT = [
    ContextPart(resource_type="Condition", entries=[ContextEntry(reference="Condition/c1", summary="T2DM")]),
    ContextPart(
        resource_type="MedicationRequest",
        entries=[ContextEntry(reference="MedicationRequest/m1", summary="Metformin, active")],
    ),
    ContextPart(
        resource_type="Observation", entries=[ContextEntry(reference="Observation/o1", summary="BMI 33")]
    ),
]
CRITERIA = ["Type 2 diabetes.", "Prior treatment with metformin."]


def test_the_template_letter_copies_the_record_and_leaves_every_criterion_to_the_reviewer() -> None:
    draft = letters.template_draft(ORDER, CONTEXT, CRITERIA, ["No payer on the coverage."], revision=2)
    assert draft.template and draft.revision == 2 and draft.model == "template"
    assert "Re: Prior authorization request for semaglutide (1991302) (order ord-42)" in draft.letter
    assert "diagnosed with Type 2 diabetes mellitus (E11.9)." in draft.letter
    assert "- T2DM [Condition/c1]" in draft.letter
    assert "- Metformin, active [MedicationRequest/m1]" in draft.letter
    assert "- Prior treatment with metformin.: [met / not met: cite the record]" in draft.letter
    assert [(c.criterion, c.status) for c in draft.criteria] == [(c, "unknown") for c in CRITERIA]
    assert draft.citations == ["Condition/c1", "MedicationRequest/m1"]  # observations are not cited
    assert draft.missing_information == ["No payer on the coverage.", missing.TEMPLATE]
    empty = letters.template_draft(ORDER.model_copy(update={"diagnoses": []}), [], [], [], revision=0)
    assert "diagnosed with [diagnosis]." in empty.letter and "- [payer criteria: add]" in empty.letter
    assert empty.letter.count("- [none found: add]") == 2 and empty.criteria == []


def test_the_ai_draft_puts_the_workflows_findings_first_and_each_once() -> None:
    output = {
        "letter": "Dear reviewer",
        "criteria": [{"criterion": "Type 2 diabetes.", "status": "met", "evidence_ids": ["Condition/c1"]}],
        "citations": ["Condition/c1"],
        "missing_information": ["No HbA1c.", "No payer on the coverage."],
    }
    draft = letters.ai_draft(output, "anthropic", "claude-x", "wf:draft", ["No payer on the coverage."], 1)
    assert draft.missing_information == ["No payer on the coverage.", "No HbA1c."]
    assert (draft.model, draft.model_version, draft.request_id, draft.revision) == (
        "anthropic/claude-x", "claude-x", "wf:draft", 1
    )  # fmt: skip
    assert draft.criteria == [
        CriterionRow(criterion="Type 2 diabetes.", status="met", evidence_ids=["Condition/c1"])
    ]


def test_the_drafter_sees_every_summary_as_fhir_evidence_and_each_revision_has_its_request_id() -> None:
    evidence = letters.context_evidence(CONTEXT)
    assert [(e.id, e.kind, e.title, e.text) for e in evidence][2] == (
        "Observation/o1",
        "fhir",
        "Observation",
        "BMI 33",
    )
    assert letters.draft_request_id("prior-auth-ord-42", 0) == "prior-auth-ord-42/draft"
    assert letters.draft_request_id("prior-auth-ord-42", 2) == "prior-auth-ord-42/draft-r2"


def draft(**kw: Any) -> Draft:
    base: dict[str, Any] = {
        "revision": 1,
        "letter": "We request semaglutide.",
        "criteria": [
            CriterionRow(criterion="Type 2 diabetes.", status="met", evidence_ids=["Condition/c1", "kb:x"]),
            CriterionRow(criterion="BMI of 30 or more.", status="not_met"),
            CriterionRow(criterion="Metformin tried.", status="met"),
        ],
        "missing_information": ["No HbA1c."],
        "model": "anthropic/claude-x",
        "model_version": "claude-x",
    }
    return Draft(**{**base, **kw})


def test_the_notification_counts_met_criteria_and_names_no_patient() -> None:
    req = letters.notification("reminder", "pa-reminder", STAFF, "t-1", ORDER, draft(template=True))
    assert req.summary == "Prior authorization draft for 1991302: 2 of 3 payer criteria met (template)."
    assert (req.recipient_ref, req.task_id, req.order_id) == ("Practitioner/s1", "t-1", "ord-42")
    assert letters.notification("s", "k", None, "t", ORDER, draft()).recipient_ref is None


# -- FHIR resources ----------------------------------------------------------------------------------
def test_the_draft_document_is_a_valid_preliminary_r4_document_marked_ai_generated() -> None:
    doc = resources.draft_document(ORDER, draft(), NOW)
    validate_resource(doc)
    assert (doc["docStatus"], doc["subject"], doc["date"]) == (
        "preliminary", {"reference": "Patient/p-3"}, NOW.isoformat()
    )  # fmt: skip
    assert doc["context"] == {
        "related": [{"reference": "MedicationRequest/mr-7"}],
        "encounter": [{"reference": "Encounter/enc-5"}],
    }
    [ai] = doc["extension"]
    assert ai["url"] == resources.AI_GENERATED_EXTENSION
    assert {e["url"]: next(v for k, v in e.items() if k != "url") for e in ai["extension"]} == {
        "model": "anthropic/claude-x", "version": "claude-x", "template": False, "revision": 1,
    }  # fmt: skip
    body = base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
    assert body.startswith("We request semaglutide.\n\n## Payer criteria\n")
    assert "| Type 2 diabetes. | met | Condition/c1, kb:x |" in body
    assert body.endswith("## Missing information\n\n- No HbA1c.\n")
    no_encounter = resources.draft_document(ORDER.model_copy(update={"encounter_ref": None}), draft(), NOW)
    assert "encounter" not in no_encounter["context"]


def test_a_later_revision_keeps_the_stored_documents_id_and_identifiers() -> None:
    doc = resources.draft_document(ORDER, draft(), NOW)
    current = {"id": "doc-1", "identifier": [{"system": "s", "value": "v"}], "docStatus": "preliminary"}
    revised = resources.revised_document(doc, current)
    assert (revised["id"], revised["identifier"]) == ("doc-1", current["identifier"])
    assert revised["description"] == doc["description"]


def test_tasks_are_valid_r4_work_items_for_a_role_on_the_order() -> None:
    review_task = resources.task(ORDER, "review-pa-draft", "Review prior authorization draft", "pa-staff",
                                 STAFF, False, [("draft", "DocumentReference/doc-1")], NOW)  # fmt: skip
    validate_resource(review_task)
    assert (review_task["priority"], review_task["owner"]) == (
        "routine",
        {"reference": "PractitionerRole/r1"},
    )
    assert review_task["focus"] == {"reference": "MedicationRequest/mr-7"}
    assert review_task["for"] == {"reference": "Patient/p-3"}
    assert review_task["input"] == [
        {"type": {"text": "draft"}, "valueReference": {"reference": "DocumentReference/doc-1"}},
        {"type": {"text": "order-id"}, "valueString": "ord-42"},
    ]
    assert review_task["performerType"][0]["coding"][0]["display"] == "Prior authorization staff"
    assert "partOf" not in review_task
    escalation = resources.task(ORDER, "escalated-pa-review", "Overdue", "pa-supervisor", None, True,
                                [("review-task", "Task/t-1")], NOW, part_of="Task/t-1")  # fmt: skip
    validate_resource(escalation)
    assert escalation["priority"] == "asap" and "owner" not in escalation
    assert escalation["partOf"] == [{"reference": "Task/t-1"}]


def test_approval_makes_the_stored_document_final_with_the_approved_text() -> None:
    stored = {**resources.draft_document(ORDER, draft(), NOW), "id": "doc-1", "meta": {"versionId": "2"}}
    final = resources.approved_document(stored, "Approved letter.", "Practitioner/s1")
    validate_resource(final)
    assert "meta" not in final and final["docStatus"] == "final" and final["id"] == "doc-1"
    attachment = final["content"][0]["attachment"]
    assert base64.b64decode(attachment["data"]).decode() == "Approved letter."
    assert attachment["contentType"] == "text/plain; charset=utf-8"
    assert final["authenticator"] == {"reference": "Practitioner/s1"}
    assert "authenticator" not in resources.approved_document(stored, "x", None)
    assert stored["docStatus"] == "preliminary"  # the stored copy is not modified


def test_closing_a_task_completes_or_cancels_it_once() -> None:
    stored = {**resources.task(ORDER, "review-pa-draft", "Review", "pa-staff", STAFF, False, [], NOW),
              "id": "t-1", "meta": {"versionId": "1"}}  # fmt: skip
    later = NOW + timedelta(hours=3)
    done = resources.closed_task(stored, "approved", "Practitioner/s1", later)
    assert done is not None
    validate_resource(done)
    assert (done["status"], done["owner"], done["lastModified"]) == (
        "completed", {"reference": "Practitioner/s1"}, later.isoformat()
    )  # fmt: skip
    expired = resources.closed_task(stored, "expired", None, later)
    assert expired is not None and expired["status"] == "cancelled"
    assert expired["statusReason"] == {"text": "payer decision deadline passed"}
    assert expired["owner"] == {"reference": "PractitionerRole/r1"}  # unchanged
    rejected = resources.closed_task(stored, "rejected", "Practitioner/s1", later)
    assert rejected is not None and rejected["statusReason"]["text"].endswith("rejected by reviewer")
    assert resources.closed_task({**stored, "status": "completed"}, "rejected", None, later) is None
    assert resources.closed_task({**stored, "status": "cancelled"}, "approved", None, later) is None


def submission(**order_changes: Any) -> PayerSubmission:
    approval = ReviewDecision(
        action="approve", reviewer_ref="Practitioner/s1", at=NOW, revision=1, via="update"
    )
    return PayerSubmission(
        approval=approval, order=ORDER.model_copy(update=order_changes), priority=Priority.EXPEDITED,
        payer_ref="Organization/aetna", payer_name="Aetna", document_reference_id="doc-1", letter="Approved.",
        criteria=draft().criteria,
    )  # fmt: skip


def test_the_pas_bundle_carries_the_approved_criteria_counts() -> None:
    bundle = resources.pas_bundle(submission(), "https://ehr.example/fhir")
    claim = bundle["entry"][0]["resource"]
    assert claim["resourceType"] == "Claim" and claim["use"] == "preauthorization"
    [summary] = [
        s for s in claim["supportingInfo"] if s["category"]["coding"][0]["system"] == CAREFLOW_SUPPORTING_INFO
    ]
    assert summary["category"]["coding"][0]["code"] == CRITERIA_SUMMARY
    assert summary["valueString"] == "met=2 not_met=1 unknown=0"
    with pytest.raises(resources.IncompleteClaim):
        resources.pas_bundle(submission(coverage_ref=None), "https://ehr.example/fhir")


# -- metrics -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        ("The patient meets criterion 1.", "The patient meets criterion 1.", 0),
        ("abc", "abXc", 1),  # one inserted
        ("abcdef", "abef", 2),  # two deleted
        ("HbA1c 8.1 %", "HbA1c 8.4 %", 2),  # one replaced: deleted + inserted
        ("", "new text", 8),
        (None, "anything", 0),  # nothing to compare with
        ("draft", None, 0),
    ],
)
def test_edit_size_counts_inserted_and_deleted_characters(
    before: str | None, after: str | None, changed: int
) -> None:
    assert metrics.edit_size(before, after) == changed


def test_the_metrics_record_times_the_draft_and_the_review() -> None:
    status = PriorAuthStatus(received_at=NOW, draft_ready_at=NOW + timedelta(minutes=4), payer="Aetna")
    record = metrics.metrics_record(
        "wf", "t1", ORDER, status, Priority.STANDARD, draft(), None, "awaiting_review"
    )
    assert (record.item_code, record.payer, record.revisions, record.draft_letter) == (
        "1991302",
        "Aetna",
        1,
        None,
    )
    assert metrics.seconds_to_draft(record) == 240.0
    assert metrics.seconds_in_review(record) is None and metrics.edit_chars(record) is None
    status.decided_at = NOW + timedelta(hours=2, minutes=4)
    decided = metrics.metrics_record(
        "wf", "t1", ORDER, status, Priority.STANDARD, draft(), "We request it.", "approved"
    )
    assert decided.draft_letter == "We request semaglutide."
    assert metrics.seconds_in_review(decided) == 7200.0
    assert metrics.edit_chars(decided) == metrics.edit_size("We request semaglutide.", "We request it.") > 0
    with pytest.raises(ValueError, match="start"):
        metrics.metrics_record("wf", "t1", ORDER, PriorAuthStatus(), Priority.STANDARD, draft(), None, "x")


def test_metrics_records_round_trip_as_activity_payloads() -> None:
    record = metrics.metrics_record("wf", "t1", ORDER, PriorAuthStatus(received_at=NOW), Priority.EXPEDITED,
                                    draft(), None, "awaiting_review")  # fmt: skip
    assert MetricsRecord.model_validate_json(record.model_dump_json()) == record


# -- review ------------------------------------------------------------------------------------------
def request(action: str = "approve", reviewer: str = "s1", comments: str = "") -> ReviewRequest:
    return ReviewRequest.model_validate({"action": action, "reviewer_id": reviewer, "comments": comments})


def in_review() -> PriorAuthStatus:
    return PriorAuthStatus(stage=Stage.AWAITING_REVIEW, revision=1, task_id="t-1")


def test_a_review_action_is_accepted_only_in_review_from_a_pa_role_with_what_it_needs() -> None:
    status = in_review()
    assert review.problem(request(), status.stage, False, ROSTER) is None
    assert review.problem(request(reviewer="Practitioner/sup1"), status.stage, False, ROSTER) is None
    assert review.problem(request(), Stage.DRAFTING, False, ROSTER) == (
        "the workflow is not awaiting review (stage drafting)"
    )
    assert "not awaiting review" in (review.problem(request(), status.stage, True, ROSTER) or "")
    assert review.problem(request(reviewer="intruder"), status.stage, False, ROSTER) == (
        "the reviewer does not hold a prior-authorization review role"
    )
    assert review.problem(request("request_changes", comments="  "), status.stage, False, ROSTER) == (
        "request_changes needs comments"
    )


def test_the_desk_accepts_one_action_and_moves_the_run_on() -> None:
    desk, status = review.ReviewDesk(roster=ROSTER), in_review()
    outcome = desk.accept(request("request_changes", comments="cite the HbA1c"), "update", NOW, status)
    assert (outcome.accepted, outcome.stage) == (True, "regenerating")
    assert status.stage == Stage.REGENERATING and status.decision is None  # not a decision on the request
    assert desk.waiting and desk.decisions == 1
    assert desk.problem(request(), status) is not None  # no second action until the run acts on the first
    taken = desk.take()
    assert taken is not None and taken.via == "update" and taken.revision == 1 and taken.at == NOW
    assert (taken.reviewer_ref, taken.comments) == ("Practitioner/s1", "cite the HbA1c")
    assert desk.take() is None and not desk.waiting
    status.stage = Stage.AWAITING_REVIEW
    desk.signal(request("approve"), NOW, status)
    assert (
        status.stage == Stage.SUBMITTING and status.decision is not None and status.decision.via == "signal"
    )


def test_the_desk_ignores_signals_it_cannot_accept_and_hands_each_to_the_audit_once() -> None:
    desk, status = review.ReviewDesk(roster=ROSTER), in_review()
    desk.signal(request(reviewer="intruder"), NOW, status)
    desk.signal(request("request_changes"), NOW, status)
    assert status.stage == Stage.AWAITING_REVIEW and status.ignored_actions == 2
    assert desk.waiting and desk.take() is None
    seen = []
    for n, req, reason in desk.unaudited():
        seen.append((n, req.action, reason))
        if n == 1:  # a signal that arrives while the first is audited is audited in the same pass
            desk.signal(request(reviewer="other"), NOW, status)
    assert [(n, a) for n, a, _ in seen] == [(1, "approve"), (2, "request_changes"), (3, "approve")]
    assert seen[1][2] == "request_changes needs comments"
    assert not desk.waiting and list(desk.unaudited()) == []


def test_reviewer_action_events_name_ids_only_and_carry_the_workflow_clock() -> None:
    d = ReviewDecision(action="approve", reviewer_ref="Practitioner/s1", at=NOW, revision=2, via="signal",
                       edited_letter="edited")  # fmt: skip
    event = review.decision_event(ORDER, d, "t-1", "prior-auth-ord-42")
    assert (event.event_type, event.actor, event.actor_type, event.outcome) == (
        AuditEventType.REVIEWER_ACTION, "Practitioner/s1", "user", AuditOutcome.SUCCESS
    )  # fmt: skip
    assert (event.patient_id, event.resource_type, event.resource_id) == ("p-3", "Task", "t-1")
    assert event.occurred_at == NOW and event.workflow_id == "prior-auth-ord-42"
    assert event.detail == {"action": "approve", "via": "signal", "revision": "2", "edited": "True"}
    ignored = review.ignored_event(ORDER, request(reviewer="intruder"), "no role", NOW, None, "wf")
    assert (ignored.actor, ignored.outcome) == ("Practitioner/intruder", AuditOutcome.REJECTED)
    assert ignored.detail == {"action": "approve", "via": "signal", "reason": "no role"}


def test_reviews_spread_over_the_staff_deterministically_and_escalate_to_the_first_supervisor() -> None:
    staff = [STAFF, STAFF.model_copy(update={"practitioner_ref": "Practitioner/s2"})]
    assert review.assignee(staff, "ord-42") == review.assignee(staff, "ord-42")
    assigned = [review.assignee(staff, f"ord-{i}") for i in range(4)]
    assert {m.practitioner_ref for m in assigned if m} == {"Practitioner/s1", "Practitioner/s2"}
    assert review.assignee([], "ord-42") is None
    assert review.supervisor(ROSTER) == SUPERVISOR and review.supervisor(ReviewRoster()) is None


def test_closing_names_every_task_the_run_made() -> None:
    records = ReviewRecords(document_reference_id="doc-1", task_id="t-1")
    status = PriorAuthStatus(task_id="t-1", escalation_task_id="t-2")
    expired = review.close_request("expired", status, records, None)
    assert (expired.task_ids, expired.reviewer_ref, expired.final_letter) == (["t-1", "t-2"], None, None)
    d = ReviewDecision(action="approve", reviewer_ref="Practitioner/s1", at=NOW, revision=0, via="update")
    approved = review.close_request("approved", PriorAuthStatus(task_id="t-1"), records, d, "Final.")
    assert (approved.task_ids, approved.reviewer_ref, approved.final_letter) == (
        ["t-1"], "Practitioner/s1", "Final."
    )  # fmt: skip


# -- deadlines and visibility ------------------------------------------------------------------------
def test_the_review_clock_expires_first_then_reminds_then_escalates() -> None:
    deadline = NOW + deadlines.DECISION_DEADLINE[Priority.EXPEDITED]
    clock = deadlines.ReviewClock.starting(NOW, deadline)
    assert deadline - NOW == timedelta(hours=72)
    assert clock.due(NOW + timedelta(hours=3), False, False) is None
    assert clock.next_due(False, False) == NOW + timedelta(hours=4)
    assert clock.due(NOW + timedelta(hours=9), False, False) == "remind"  # both due: the reminder first
    assert clock.due(NOW + timedelta(hours=9), True, False) == "escalate"
    assert clock.next_due(True, False) == NOW + timedelta(hours=8)
    assert clock.due(NOW + timedelta(hours=9), True, True) is None
    assert clock.next_due(True, True) == deadline
    assert clock.due(deadline, False, False) == "expire"
    assert deadlines.follow_up_in_time(deadline - timedelta(hours=1), deadline)
    assert not deadlines.follow_up_in_time(deadline - timedelta(minutes=59), deadline)


def test_the_memo_holds_codes_and_counts_only() -> None:
    status = in_review()
    status.criteria, status.payer, status.missing_information = draft().criteria, "Aetna", ["No HbA1c."]
    assert memo_summary("prior-auth", Stage.AWAITING_REVIEW, status, "1991302", Priority.STANDARD) == {
        "pipeline": "prior-auth", "stage": "awaiting_review", "item": "1991302", "payer": "Aetna",
        "priority": "standard", "criteria_met": "2/3", "missing_information": 1, "partial_context": False,
        "template": False, "revision": 1,
    }  # fmt: skip
    for outcome, stage in (("approved", Stage.APPROVED), ("pended", Stage.PENDED), ("denied", Stage.DENIED)):
        assert (
            payer_stage(PayerOutcome.model_validate({"outcome": outcome, "claim_response_id": "c"})) == stage
        )


def test_the_missing_information_lines() -> None:
    assert missing.partial_context(["Procedure", "Observation"]) == (
        "Partial patient context: the EHR did not return Procedure, Observation within 30 minutes."
    )
    assert missing.submission_refused(None) == "Payer submission refused (error): staff must submit by hand."


def test_the_domain_modules_import_neither_temporal_nor_io_clients() -> None:
    """The workflow imports these; they must stay pure (the store is the one module with Postgres)."""
    code = (
        "import sys\n"
        "from careflow.prior_auth import criteria, deadlines, letters, metrics, missing, resources, review\n"
        "from careflow.prior_auth import summaries, visibility\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'temporalio', 'asyncpg', 'httpx'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"

"""The offline engine: valid, grounded, deterministic drafts of every careflow task."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careflow.llm import offline_rules
from careflow.llm.providers.offline import ENGINE_VERSION, OfflineProvider
from careflow.llm.structured import parse_output
from careflow.llm.tasks import (
    TASKS,
    LabUrgency,
    PaJustification,
    RagAnswer,
    ReadmissionNarrative,
    RiskFactor,
    SoapNote,
    TaskInput,
    TaskOutput,
    factor_evidence,
)
from careflow.llm.types import CompletionResponse, Evidence

PROVIDER = OfflineProvider()
ROOT = Path(__file__).resolve().parents[2]

# --- a realistic record ----------------------------------------------------------------------------------

RECORD = [
    Evidence(
        id="Condition/c1",
        kind="fhir",
        title="Type 2 diabetes mellitus without complications (E11.9)",
        text="Type 2 diabetes mellitus without complications, ICD-10-CM E11.9, active since 2019-03-01.",
    ),
    Evidence(
        id="Condition/c2", kind="fhir", title="Obesity (E66.9)", text="Obesity E66.9, active. BMI 34.2 kg/m2."
    ),
    Evidence(
        id="MedicationRequest/m1",
        kind="fhir",
        title="metformin",
        text="metformin 500 mg by mouth twice daily with meals, active since 2024-01-10.",
    ),
    Evidence(id="Observation/o1", kind="lab", title="HbA1c", text="HbA1c 8.4 % on 2026-09-12 (high)."),
    Evidence(id="Condition/c3", kind="fhir", title="Review of systems", text="Patient denies pancreatitis."),
    Evidence(
        id="guideline:ada-2025#9.2",
        kind="guideline",
        title="ADA Standards of Care 2025",
        text="Section: 9.2 Glucose-lowering therapy\nEffective: 2025-01-01\n"
        "In adults with type 2 diabetes and obesity, a GLP-1 receptor agonist such as semaglutide is "
        "recommended when glycemic targets are not "
        "met on metformin. Reassess therapy every 3 to 6 months.",
    ),
    Evidence(
        id="transcript:enc-1",
        kind="transcript",
        text="PHYSICIAN: How have you been?\n"
        "PATIENT: My sugars have been high for weeks and I am always thirsty, says [PATIENT].\n"
        "PHYSICIAN: Your blood pressure is 138 over 84 today. I think your diabetes is not controlled on "
        "metformin alone. We will start semaglutide and recheck your HbA1c in three months.",
    ),
]
IDS = {e.id for e in RECORD}
INPUTS: dict[str, dict[str, Any]] = {
    "pa_justification": {
        "requested_item": "semaglutide 0.25 mg weekly",
        "payer": "Acme Health",
        "order_id": "ord-7",
        "criteria": [
            "Diagnosis of type 2 diabetes (E11.*)",
            "Trial and failure of metformin for at least 3 months",
            "HbA1c above 7%",
            "BMI >= 40",
            "History of pancreatitis",
            "No history of pancreatitis",
            "Documented retinopathy screening",
        ],
    },
    "soap_note": {"specialty": "endocrinology"},
    "lab_urgency": {
        "test": "Potassium",
        "value": 6.8,
        "units": "mmol/L",
        "reference_range": "3.5-5.1",
        "abnormal_flags": ["HH"],
        "rule_urgency": "critical",
        "rule_reasons": ["above critical limit 6.2 mmol/L"],
        "baseline": [4.1, 4.3],
    },
    "readmission_narrative": {
        "risk_score": 0.42,
        "risk_tier": "high",
        "model_version": "3",
        "factors": [
            {
                "evidence_id": "factor:2",
                "name": "number of active medications",
                "value": "11",
                "contribution": 0.15,
            },
            {
                "evidence_id": "factor:1",
                "name": "admissions in the prior 12 months",
                "value": "3",
                "contribution": 0.21,
            },
            {"evidence_id": "factor:3", "name": "last sodium", "value": "128", "contribution": 0.12},
        ],
    },
    "rag_answer": {"question": "When should a GLP-1 receptor agonist be added for type 2 diabetes?"},
}


async def draft(task: str, task_input: dict[str, Any], evidence: list[Evidence]) -> CompletionResponse:
    return await PROVIDER.complete(TASKS[task].build_request(task_input, evidence), f"offline-{task}")


async def parsed(task: str, task_input: dict[str, Any], evidence: list[Evidence]) -> TaskOutput:
    response = await draft(task, task_input, evidence)
    out = parse_output(task, response, {e.id for e in evidence})
    assert isinstance(out, TaskOutput)
    return out


async def test_pa_justification_maps_each_criterion_with_its_evidence() -> None:
    out = await parsed("pa_justification", INPUTS["pa_justification"], RECORD)
    assert isinstance(out, PaJustification)
    statuses = {c.criterion: (c.status, c.evidence_ids) for c in out.criteria}
    assert statuses == {
        "Diagnosis of type 2 diabetes (E11.*)": ("met", ["Condition/c1"]),
        "Trial and failure of metformin for at least 3 months": ("met", ["MedicationRequest/m1"]),
        "HbA1c above 7%": ("met", ["Observation/o1"]),  # 8.4 > 7
        "BMI >= 40": ("not_met", ["Condition/c2"]),  # 34.2 < 40
        "History of pancreatitis": ("not_met", ["Condition/c3"]),  # "denies pancreatitis"
        "No history of pancreatitis": ("met", ["Condition/c3"]),
        "Documented retinopathy screening": ("unknown", []),
    }
    assert out.missing_information == ["Not documented in the evidence: Documented retinopathy screening"]
    letter = out.letter
    assert letter.startswith("To: Acme Health, utilization management\nRe: Prior authorization request for")
    assert "(order ord-7)" in letter and "DRAFT" in letter
    assert (
        "- Type 2 diabetes mellitus without complications, ICD-10-CM E11.9, active since 2019-03-01"
        " [Condition/c1]" in letter
    )
    assert "semaglutide is recommended" in letter and "[guideline:ada-2025#9.2]" in letter
    assert "Summary: 4 of 7 payer criteria are documented as met" in letter
    assert "Recent results:\n- " in letter and "[Observation/o1]" in letter
    assert "guideline:ada-2025#9.2" in out.citations and "transcript:enc-1" not in out.citations


async def test_guidelines_never_satisfy_a_patient_criterion() -> None:
    guideline_only = [e for e in RECORD if e.kind == "guideline"]
    out = await parsed(
        "pa_justification", {"requested_item": "semaglutide", "criteria": ["obesity"]}, guideline_only
    )
    assert isinstance(out, PaJustification)
    assert out.criteria[0].status == "unknown"  # the guideline mentions obesity; the patient record does not


async def test_soap_note_sections_and_grounded_icd10_codes() -> None:
    out = await parsed("soap_note", INPUTS["soap_note"], RECORD)
    assert isinstance(out, SoapNote)
    assert out.subjective.startswith("My sugars have been high for weeks")
    assert "blood pressure is 138 over 84" in out.objective and "HbA1c 8.4 %" in out.objective
    assert "diabetes is not controlled" in out.assessment
    assert out.plan.startswith("We will start semaglutide")
    assert [(s.code, s.evidence_ids) for s in out.icd10_suggestions] == [
        ("E11.9", ["Condition/c1", "transcript:enc-1"])
    ]  # obesity (E66.9) is in the record but was not discussed
    assert out.icd10_suggestions[0].description == "Type 2 diabetes mellitus without complications"


async def test_soap_note_follows_speaker_labels_and_continuation_lines() -> None:
    transcript = Evidence(
        id="transcript:enc-2",
        kind="transcript",
        text="Dr. Lee: Good to see you again.\nBP: 150/95 mmHg, pulse 88.\n"
        "Patient: The headaches started two weeks ago.\nFamily: She has been skipping her pills lately.\n"
        "Dr. Lee: Do you take anything for it?\nDr. Lee: We will increase lisinopril to 20 mg daily.",
    )
    out = await parsed("soap_note", {}, [transcript])
    assert isinstance(out, SoapNote)
    assert out.objective == "BP: 150/95 mmHg, pulse 88. [transcript:enc-2]"  # the doctor's turn goes on
    assert "Good to see you" not in out.model_dump_json()  # small talk is in no section
    assert "headaches started two weeks ago" in out.subjective and "skipping her pills" in out.subjective
    assert out.plan == "We will increase lisinopril to 20 mg daily. [transcript:enc-2]"
    assert "Do you take anything" not in out.model_dump_json()  # questions are not findings
    assert out.icd10_suggestions == []
    assert "Assessment: nothing documented in the transcript or record." in out.missing_information


async def test_lab_urgency_keeps_the_rule_floor_and_cites_context() -> None:
    out = await parsed("lab_urgency", INPUTS["lab_urgency"], RECORD)
    assert isinstance(out, LabUrgency)
    assert out.urgency == "critical"
    assert out.clinical_narrative.startswith("Potassium 6.8 mmol/L (reference range 3.5-5.1; flags HH).")
    assert "median 4.2 mmol/L over 2 prior results" in out.clinical_narrative
    assert out.citations == ["Condition/c1", "Condition/c2", "Condition/c3", "Observation/o1"]
    flags_only = await parsed("lab_urgency", {"test": "Sodium", "value": "128", "abnormal_flags": ["L"]}, [])
    assert isinstance(flags_only, LabUrgency) and flags_only.urgency == "high"


async def test_readmission_narrative_cites_only_the_model_factors() -> None:
    factors = [RiskFactor.model_validate(f) for f in INPUTS["readmission_narrative"]["factors"]]
    out = await parsed("readmission_narrative", INPUTS["readmission_narrative"], factor_evidence(factors))
    assert isinstance(out, ReadmissionNarrative)
    assert out.top_factors == [
        "admissions in the prior 12 months", "number of active medications", "last sodium"
    ]  # fmt: skip
    assert out.citations == ["factor:1", "factor:2", "factor:3"]
    assert out.narrative.startswith(
        "High risk of readmission within 30 days (score 0.42, model version 3) because of: "
        "admissions in the prior 12 months (3) [factor:1]; number of active medications (11) [factor:2]"
    )
    assert out.interventions == [
        "transitional-care call within 48 hours of discharge",
        "pharmacist medication reconciliation before discharge",
        "repeat sodium within one week; review diuretics and fluid advice",
    ]
    assert not out.missing_information
    # Chart evidence is not the model's: a factor whose evidence item is absent is not cited.
    chart_only = await parsed("readmission_narrative", INPUTS["readmission_narrative"], RECORD)
    assert isinstance(chart_only, ReadmissionNarrative) and chart_only.citations == []
    assert len(chart_only.missing_information) == 4


async def test_rag_answer_cites_title_section_and_effective_date() -> None:
    out = await parsed("rag_answer", INPUTS["rag_answer"], RECORD)
    assert isinstance(out, RagAnswer)
    assert [c.model_dump() for c in out.citations] == [
        {
            "evidence_id": "guideline:ada-2025#9.2",
            "document_title": "ADA Standards of Care 2025",
            "section": "9.2 Glucose-lowering therapy",
            "effective_date": "2025-01-01",
        }
    ]
    assert "GLP-1 receptor agonist such as semaglutide is recommended" in out.answer
    assert out.disclaimer
    overridden = await parsed(
        "rag_answer",
        {
            **INPUTS["rag_answer"],
            "sources": {"guideline:ada-2025#9.2": {"section": "9.2", "effective_date": "2025"}},
        },
        RECORD,
    )
    assert isinstance(overridden, RagAnswer)
    assert (overridden.citations[0].section, overridden.citations[0].effective_date) == ("9.2", "2025")


async def test_every_task_states_what_is_missing_without_evidence() -> None:
    for task, task_input in INPUTS.items():
        out = await parsed(task, task_input, [])
        assert out.missing_information, task
        assert out.cited_ids() == [], task


async def test_offline_metadata_usage_and_determinism() -> None:
    for task, task_input in INPUTS.items():
        first = await draft(task, task_input, RECORD)
        again = await draft(task, task_input, list(reversed(RECORD)))
        assert first.text.encode() == again.text.encode(), task
        assert first.metadata == {"engine": "offline", "engine_version": ENGINE_VERSION, "task": task}
        assert (first.provider, first.finish_reason) == ("offline", "end_turn")
        assert first.usage.output_tokens == -(-len(first.text) // 4)
        assert first.usage.input_tokens > first.usage.output_tokens // 4


def test_drafts_are_identical_across_processes_with_different_hash_seeds() -> None:
    script = (
        "import asyncio, json, sys\n"
        "from tests.gateway.test_offline_provider import INPUTS, RECORD, draft\n"
        "async def main():\n"
        "    for task, task_input in INPUTS.items():\n"
        "        sys.stdout.write((await draft(task, task_input, RECORD)).text + '\\n')\n"
        "asyncio.run(main())\n"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == len(INPUTS)


async def test_free_form_requests_are_answered_honestly_and_bad_input_is_refused() -> None:
    from careflow.llm.types import CompletionRequest, Message, ProviderError

    plain = CompletionRequest(system="s", messages=[Message(role="user", content="hi")])
    response = await PROVIDER.complete(plain, "offline-standard")
    assert "drafts careflow tasks only" in response.text
    bad = CompletionRequest(system="s", messages=[], task="lab_urgency", task_input={"value": "1"})
    try:
        await PROVIDER.complete(bad, "offline-efficient")
    except ProviderError as err:
        assert err.kind == "bad_request" and "test" in str(err)
    else:
        raise AssertionError("invalid task input was accepted")


# --- properties over random evidence sets ------------------------------------------------------------------

CONDITIONS = [
    ("E11.9", "Type 2 diabetes mellitus"),
    ("I10", "Essential hypertension"),
    ("I50.9", "Heart failure"),
    ("N18.30", "Chronic kidney disease stage 3"),
    ("J44.9", "Chronic obstructive pulmonary disease"),
    ("M17.11", "Primary osteoarthritis of the right knee"),
]
PHRASES = [
    "metformin 500 mg twice daily",
    "lisinopril 10 mg daily",
    "physical therapy for 12 weeks",
    "HbA1c 9.1 %",
    "BMI 41 kg/m2",
    "creatinine 2.1 mg/dL",
    "denies chest pain",
    "no history of pancreatitis",
    "total knee arthroplasty recommended",
    "amoxicillin 1 g three times daily",
]
words = st.sampled_from(PHRASES)
KINDS = ["Condition", "MedicationRequest", "Procedure", "Observation", "guideline", "transcript", "x"]
SPEAKERS = ["PATIENT", "PHYSICIAN", "Dr. Lee", "Family"]
FACTORS = ["diabetes", "heart_failure", "medication_count", "knee", "prior_admissions"]


@st.composite
def evidence_item(draw: st.DrawFn, n: int) -> Evidence:
    kind = draw(
        st.sampled_from(
            ["Condition", "MedicationRequest", "Procedure", "Observation", "guideline", "transcript", "x"]
        )
    )
    body = ". ".join(draw(st.lists(words, min_size=1, max_size=3)))
    if kind == "Condition":
        code, name = draw(st.sampled_from(CONDITIONS))
        return Evidence(
            id=f"Condition/{n}", kind="fhir", title=f"{name} ({code})", text=f"{name} {code}. {body}"
        )
    if kind == "guideline":
        date = draw(st.sampled_from(["2019-10-01", "2024-05-20"]))
        return Evidence(
            id=f"guideline:doc-{n}#{n}.1",
            kind="guideline",
            title=f"Guide {n}",
            text=f"Effective: {date}\n{body}.",
        )
    if kind == "transcript":
        said = draw(st.lists(words, min_size=1, max_size=4))
        lines = [
            f"{draw(st.sampled_from(SPEAKERS))}: [PATIENT], I think {s} and we will start it." for s in said
        ]
        return Evidence(id=f"transcript:{n}", kind="transcript", text="\n".join(lines))
    if kind == "x":
        return Evidence(id=f"note-{n}", kind="note", text=body)
    return Evidence(id=f"{kind}/{n}", kind="fhir", title=draw(st.sampled_from(["", kind.lower()])), text=body)


@st.composite
def evidence_sets(draw: st.DrawFn) -> list[Evidence]:
    size = draw(st.integers(min_value=0, max_value=8))
    return [draw(evidence_item(i)) for i in range(size)]


task_inputs = st.fixed_dictionaries(
    {
        "pa_justification": st.fixed_dictionaries(
            {
                "requested_item": st.sampled_from(["semaglutide", "total knee arthroplasty"]),
                "criteria": st.lists(
                    st.sampled_from(
                        [
                            "Diagnosis of E11.*",
                            "HbA1c above 7%",
                            "BMI at least 35",
                            "No chest pain",
                            "Trial of metformin",
                            "Physical therapy for at least 6 weeks",
                            "I10",
                        ]
                    ),
                    max_size=5,
                ),
            }
        ),
        "soap_note": st.just({}),
        "lab_urgency": st.fixed_dictionaries(
            {
                "test": st.just("Creatinine"),
                "value": st.floats(min_value=0.1, max_value=12, allow_nan=False),
                "abnormal_flags": st.lists(st.sampled_from(["H", "HH", "L", "N"]), max_size=2),
                "rule_urgency": st.sampled_from([None, "low", "high", "critical"]),
                "baseline": st.lists(st.floats(min_value=0.3, max_value=5), max_size=4),
            }
        ),
        "readmission_narrative": st.fixed_dictionaries(
            {
                "risk_score": st.floats(min_value=0, max_value=1),
                "factors": st.lists(
                    st.builds(
                        dict,
                        evidence_id=st.sampled_from(["factor:1", "factor:2", "Condition/c1"]),
                        name=st.sampled_from(["last sodium", "age", "length of stay", "knee"]),
                        contribution=st.floats(min_value=-1, max_value=1),
                    ),
                    max_size=3,
                ),
            }
        ),
        "rag_answer": st.fixed_dictionaries(
            {
                "question": st.sampled_from(
                    ["first-line antibiotic for pneumonia?", "metformin dose", "knee arthroplasty"]
                )
            }
        ),
    }
)


def _evidence_text(evidence: list[Evidence], ids: list[str]) -> str:
    return " ".join(f"{e.title} {e.text}" for e in evidence if e.id in ids)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def assert_grounded(out: TaskOutput, evidence: list[Evidence], task_input: dict[str, Any]) -> None:
    """Factual fields are copied from the inputs: codes, dates, sections, factor names, urgency floor."""
    if isinstance(out, SoapNote | RagAnswer):
        # Extractive tasks: every number they state (a dose, a value, a date part) is in the inputs.
        corpus = " ".join([json.dumps(task_input), *(f"{e.id} {e.title} {e.text}" for e in evidence)])
        for text in _strings(out.model_dump(exclude={"missing_information"})):
            for number in re.findall(r"(?<![\w.])\d+(?:\.\d+)?", text):
                assert number in corpus, number
    if isinstance(out, SoapNote):
        for s in out.icd10_suggestions:
            conditions = [i for i in s.evidence_ids if i.startswith("Condition/")]
            assert conditions and s.code in offline_rules.icd10_codes(_evidence_text(evidence, conditions))
            assert s.description in _evidence_text(evidence, conditions)
    elif isinstance(out, RagAnswer):
        for c in out.citations:
            source = _evidence_text(evidence, [c.evidence_id]) + c.evidence_id
            for value in (c.document_title, c.section, c.effective_date):
                assert value in source
    elif isinstance(out, ReadmissionNarrative):
        assert set(out.top_factors) <= {f["name"] for f in task_input["factors"]}
        assert set(out.citations) <= {f["evidence_id"] for f in task_input["factors"]}
    elif isinstance(out, LabUrgency):
        rank = {"low": 0, "high": 1, "critical": 2}
        assert rank[out.urgency] >= rank[task_input["rule_urgency"] or "low"]
    elif isinstance(out, PaJustification):
        assert [crit.criterion for crit in out.criteria] == task_input["criteria"]
        for crit in out.criteria:
            assert (crit.status == "unknown") == (not crit.evidence_ids)
            assert not any(i.startswith("guideline:") for i in crit.evidence_ids)
    # Every "[id]" tag written into prose names a given evidence id ("[PATIENT]" is a placeholder, not an id).
    for tag in (t for text in _strings(out.model_dump()) for t in re.findall(r"\[([^\[\]]+)\]", text)):
        for ident in tag.split(", "):
            assert ident in {e.id for e in evidence} or not re.search(r"[/:]", ident), ident


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evidence=evidence_sets(), inputs=task_inputs, order=st.randoms(use_true_random=False))
async def test_every_draft_validates_cites_only_given_ids_and_is_grounded(
    evidence: list[Evidence], inputs: dict[str, dict[str, Any]], order: Any
) -> None:
    ids = {e.id for e in evidence}
    for task, task_input in inputs.items():
        response = await draft(task, task_input, evidence)
        out = parse_output(task, response, ids)  # schema + citations are a subset of the given ids
        assert isinstance(out, TaskOutput)
        assert set(out.cited_ids()) <= ids
        assert_grounded(out, evidence, task_input)
        shuffled = list(evidence)
        order.shuffle(shuffled)
        assert (await draft(task, task_input, shuffled)).text == response.text
        assert json.loads(response.text) == out.model_dump(mode="json")


# -- criterion rules: alternatives, postfix thresholds, who may contradict ------------------------
RED_FLAGS = (
    "At least one red flag is present: suspected cauda equina syndrome (urinary retention, saddle "
    "anaesthesia); a progressive neurological deficit (for example foot drop); or suspected spinal "
    "infection (fever, IV drug use)."
)


def ev(evidence_id: str, text: str) -> Evidence:
    return Evidence(id=evidence_id, kind="fhir", title=evidence_id.split("/")[0], text=text)


def test_one_documented_alternative_meets_the_criterion() -> None:
    record = [ev("Condition/d1", "Condition: progressive neurological deficit of the left leg; active.")]
    found = offline_rules.assess_criterion(RED_FLAGS, record)
    assert (found.status, found.evidence_ids) == ("met", ["Condition/d1"])


def test_alternatives_are_not_met_only_when_each_is_contradicted() -> None:
    criterion = "Failure of metformin, or intolerance of a sulfonylurea"
    denied = [ev("Condition/n1", "Condition: no metformin given; denies sulfonylurea intolerance.")]
    assert offline_rules.assess_criterion(criterion, denied).status == "not_met"
    one_left = [ev("Condition/n2", "Condition: no metformin given.")]  # the sulfonylurea is not mentioned
    assert offline_rules.assess_criterion(criterion, one_left).status == "unknown"


def test_an_insurance_line_never_contradicts_a_clinical_criterion() -> None:
    record = [ev("Coverage/c1", "Coverage: no progressive neurological deficit benefit rider; active.")]
    assert offline_rules.assess_criterion(RED_FLAGS, record).status == "unknown"
    assert offline_rules.assess_criterion("Progressive neurological deficit", record).status == "unknown"


def test_parenthesised_examples_are_not_required_terms() -> None:
    record = [ev("Condition/s1", "Condition: spinal infection; active.")]
    assert (
        offline_rules.assess_criterion("Suspected spinal infection (fever, IV drug use)", record).status
        == "met"
    )


@pytest.mark.parametrize(("value", "status"), [("8.1", "met"), ("7.0", "met"), ("6.2", "not_met")])
def test_a_threshold_written_after_its_value_is_compared(value: str, status: str) -> None:
    criterion = "The most recent HbA1c, measured within the past 6 months, is 7.0% or higher."
    record = [
        ev("Observation/a1", f"Observation: HbA1c {value} % (LOINC 4548-4, reference 4.0-5.6), 2026-09-01.")
    ]
    found = offline_rules.assess_criterion(criterion, record)
    assert (found.status, found.evidence_ids) == (status, ["Observation/a1"])


def test_a_quantity_is_matched_by_any_of_its_names() -> None:
    record = [ev("Observation/b1", "Observation: Body mass index (BMI) 41.3 kg/m2, 2026-10-02.")]
    assert offline_rules.assess_criterion("BMI of at least 40", record).status == "met"
    assert offline_rules.assess_criterion("body mass index 30 kg/m2 or more", record).status == "met"
    assert offline_rules.assess_criterion("BMI below 35", record).status == "not_met"


def test_every_task_has_an_offline_drafter_keyed_by_its_input_type() -> None:
    from careflow.llm.providers.offline import DRAFTED_TASKS, DRAFTERS
    from careflow.llm.tasks import spec_for

    assert set(DRAFTERS) == {spec.input_model for spec in TASKS.values()}
    assert DRAFTED_TASKS == sorted(TASKS)
    for spec in TASKS.values():
        assert spec_for(spec.input_model) is spec
    with pytest.raises(KeyError, match="not the input of a careflow task"):
        spec_for(TaskInput)

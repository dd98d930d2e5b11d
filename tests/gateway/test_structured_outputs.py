"""Task schemas, prompt building, output validation (schema + citations) and quality signals."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from careflow.llm.structured import StructuredOutputError, corrective_request, parse_output, quality_signals
from careflow.llm.tasks import CLINICAL_DISCLAIMER, TASKS, PaJustification, RagAnswer, render_evidence
from careflow.llm.types import CompletionResponse, Evidence, Tier, Usage

EVIDENCE = [
    Evidence(id="Condition/1", kind="fhir", title="Type 2 diabetes (E11.9)", text="Type 2 diabetes E11.9."),
    Evidence(
        id="guideline:ada#9", kind="guideline", title="ADA 2025", text="Effective: 2025-01-01\nUse GLP-1."
    ),
]
IDS = {e.id for e in EVIDENCE}
PA = {
    "letter": "Dear payer ...",
    "criteria": [{"criterion": "Diagnosis of diabetes", "status": "met", "evidence_ids": ["Condition/1"]}],
    "missing_information": [],
    "citations": ["Condition/1", "guideline:ada#9"],
}


def answer(text: str, finish_reason: str = "end_turn") -> CompletionResponse:
    return CompletionResponse(
        text=text, provider="anthropic", model="m", finish_reason=finish_reason, usage=Usage()
    )


def rejection(task: str, text: str, finish_reason: str = "end_turn") -> StructuredOutputError:
    with pytest.raises(StructuredOutputError) as caught:
        parse_output(task, answer(text, finish_reason), IDS)
    return caught.value


def test_a_valid_answer_parses_even_inside_a_code_fence() -> None:
    parsed = parse_output("pa_justification", answer(json.dumps(PA)), IDS)
    assert isinstance(parsed, PaJustification) and parsed.criteria[0].status == "met"
    fenced = parse_output("pa_justification", answer("```json\n" + json.dumps(PA) + "\n```"), IDS)
    assert fenced == parsed


def test_invented_citations_are_rejected_naming_them_and_the_allowed_ids() -> None:
    invented = {**PA, "citations": ["Condition/1", "Condition/999"]}
    err = rejection("pa_justification", json.dumps(invented))
    assert "cites ids not in the evidence: Condition/999" in str(err)
    assert "the evidence ids are: Condition/1, guideline:ada#9" in str(err)
    in_criteria = {**PA, "criteria": [{"criterion": "x", "status": "met", "evidence_ids": ["Procedure/7"]}]}
    assert "Procedure/7" in str(rejection("pa_justification", json.dumps(in_criteria)))
    rag = {
        "answer": "a",
        "disclaimer": "d",
        "citations": [{"evidence_id": "guideline:made-up", "document_title": "t"}],
    }
    assert "guideline:made-up" in str(rejection("rag_answer", json.dumps(rag)))
    phi_as_id = {**PA, "citations": ["Jane Roe's chart"]}
    message = str(rejection("pa_justification", json.dumps(phi_as_id)))
    assert "<malformed id>" in message and "Jane" not in message


def test_schema_violations_are_named_by_field_without_echoing_values() -> None:
    bad = {**PA, "criteria": [{"criterion": "x", "status": "probably", "evidence_ids": []}], "letter": 42}
    del bad["citations"]
    bad["patient_name"] = "Jane Roe"
    bad["Jane Roe, DOB 1950-01-01"] = 1
    err = rejection("pa_justification", json.dumps(bad))
    message = str(err)
    assert "criteria.0.status: Input should be 'met', 'not_met' or 'unknown'" in message
    assert "letter: Input should be a valid string" in message
    assert "citations: Field required" in message
    assert "patient_name: Extra inputs are not permitted" in message
    assert "<key>: Extra inputs are not permitted" in message
    assert "Jane Roe" not in message and "1950" not in message and "probably" not in message
    assert message.endswith("citing only the evidence ids given.")
    assert len(err.problems) == 5


def test_non_json_and_truncated_answers_say_so() -> None:
    assert "not valid JSON" in str(rejection("lab_urgency", "The urgency is critical."))
    truncated = rejection("lab_urgency", '{"urgency": "critical", "clinical_narr', finish_reason="max_tokens")
    assert "cut off at the output token limit" in str(truncated) and "not valid JSON" in str(truncated)


def test_icd10_suggestions_need_evidence_and_are_capped() -> None:
    note = {"subjective": "s", "objective": "o", "assessment": "a", "plan": "p", "citations": []}
    no_evidence = {**note, "icd10_suggestions": [{"code": "E11.9", "description": "d", "evidence_ids": []}]}
    assert "icd10_suggestions.0.evidence_ids" in str(rejection("soap_note", json.dumps(no_evidence)))
    many = [{"code": "E11.9", "description": "d", "evidence_ids": ["Condition/1"]}] * 26
    assert "icd10_suggestions: List should have at most 25 items" in str(
        rejection("soap_note", json.dumps({**note, "icd10_suggestions": many}))
    )


def test_corrective_request_appends_the_answer_and_the_problems() -> None:
    request = TASKS["pa_justification"].build_request({"requested_item": "semaglutide"}, EVIDENCE)
    bad = answer('{"letter": "x"}')
    with pytest.raises(StructuredOutputError) as caught:
        parse_output("pa_justification", bad, IDS)
    retry = corrective_request(request, bad, caught.value)
    assert [m.role for m in retry.messages] == ["user", "assistant", "user"]
    assert retry.messages[1].content == '{"letter": "x"}'
    assert retry.messages[2].content == str(caught.value)
    assert (retry.system, retry.evidence, retry.task) == (request.system, request.evidence, request.task)


def test_quality_signals() -> None:
    rag = {
        "answer": "Use GLP-1 [guideline:ada#9].",
        "citations": [
            {"evidence_id": "guideline:ada#9", "document_title": "ADA 2025", "effective_date": "2025-01-01"}
        ],
        "disclaimer": CLINICAL_DISCLAIMER,
    }
    response = answer(json.dumps(rag))
    parsed = parse_output("rag_answer", response, IDS)
    assert isinstance(parsed, RagAnswer)
    signals = quality_signals("rag_answer", response, parsed)
    assert signals == {
        "task": "rag_answer",
        "provider": "anthropic",
        "model": "m",
        "finish_reason": "end_turn",
        "valid": True,
        "citation_count": 1,
        "disclaimer_present": True,
        "missing_information_count": 0,
        "response_length": len(response.text),
        "engine": "llm",
    }
    no_disclaimer = parse_output("rag_answer", answer(json.dumps({**rag, "disclaimer": " "})), IDS)
    assert quality_signals("rag_answer", response, no_disclaimer)["disclaimer_present"] is False
    pa = quality_signals(
        "pa_justification",
        answer(json.dumps(PA)),
        parse_output("pa_justification", answer(json.dumps(PA)), IDS),
    )
    assert (pa["citation_count"], pa["disclaimer_present"]) == (2, None)
    failed = quality_signals("lab_urgency", answer("nope"), None)
    assert (failed["valid"], failed["citation_count"]) == (False, 0)


def test_every_task_builds_a_json_only_request_with_its_schema() -> None:
    inputs: dict[str, dict[str, Any]] = {
        "pa_justification": {"requested_item": "semaglutide", "criteria": ["BMI >= 30"]},
        "soap_note": {},
        "note_draft": {"age": 67, "sex": "female"},
        "lab_urgency": {"test": "Potassium", "value": 6.8},
        "readmission_narrative": {"risk_score": 0.8},
        "rag_answer": {"question": "q"},
    }
    assert set(inputs) == set(TASKS)
    for name, spec in TASKS.items():
        request = spec.build_request(inputs[name], EVIDENCE)
        assert request.task == name and request.evidence == EVIDENCE
        assert "Respond with one JSON object" in request.system and "cite no other ids" in request.system
        schema = spec.output_model.model_json_schema()
        assert json.dumps(schema, sort_keys=True) in request.system
        assert schema["additionalProperties"] is False
        assert request.contains_phi == (name != "rag_answer")
        assert (
            json.loads(request.messages[0].content.split("Task input (JSON):\n")[1].split("\n")[0])
            == request.task_input
        )
        assert spec.build_request(inputs[name], EVIDENCE, Tier.EFFICIENT).max_tokens == spec.max_tokens // 2
    assert TASKS["lab_urgency"].build_request(inputs["lab_urgency"], []).task_input["value"] == "6.8"
    assert CLINICAL_DISCLAIMER in TASKS["rag_answer"].build_request({"question": "q"}, []).system
    with pytest.raises(ValidationError):
        TASKS["readmission_narrative"].build_request({"risk_score": 7}, [])
    with pytest.raises(ValidationError, match="payer_criteria"):
        TASKS["pa_justification"].build_request({"requested_item": "x", "payer_criteria": ["y"]}, [])
    with pytest.raises(KeyError, match="unknown careflow task"):
        parse_output("poetry", answer("{}"), set())


def test_render_evidence_marks_each_item_with_its_id() -> None:
    rendered = render_evidence(EVIDENCE)
    assert rendered.startswith(
        '<evidence>\n<item id="Condition/1" kind="fhir" title="Type 2 diabetes (E11.9)">'
    )
    assert "Use GLP-1." in rendered and rendered.endswith("</evidence>")
    assert "(none provided)" in render_evidence([])

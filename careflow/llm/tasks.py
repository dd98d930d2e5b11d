"""careflow's LLM tasks: per task an input model, an output schema and a prompt builder.

A task's request carries its evidence separately from the prompt text: real providers render the
evidence as a cacheable context block (`render_evidence`), the offline engine drafts from it.  Every
output cites evidence ids only, and lists what it could not find in `missing_information`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from careflow.llm.types import CompletionRequest, Evidence, Message, Tier

CLINICAL_DISCLAIMER = (
    "Clinical decision support only: verify against the cited sources and clinical judgement; "
    "this is not a substitute for the treating clinician's assessment."
)


class TaskInput(BaseModel):
    """Base of every task input: strict, so a misspelt field fails loudly instead of being dropped."""

    model_config = ConfigDict(extra="forbid")


class TaskOutput(BaseModel):
    """Base of every task output: strict (unknown keys are schema violations) and citing."""

    model_config = ConfigDict(extra="forbid")

    missing_information: list[str] = Field(default_factory=list)

    def cited_ids(self) -> list[str]:
        """Every evidence id the output cites, in order of appearance (duplicates kept)."""
        return list(getattr(self, "citations", []))


# --- pa_justification (seed P2, P16) ---------------------------------------------------------------


class PaJustificationInput(TaskInput):
    requested_item: str  # the drug or procedure the order asks the payer to authorise
    payer: str = ""
    order_id: str = ""
    criteria: list[str] = Field(default_factory=list)  # the payer's clinical criteria, verbatim
    reviewer_comments: str = ""  # a reviewer's requested changes: the redraft must address them


class CriterionAssessment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    criterion: str
    status: Literal["met", "not_met", "unknown"]
    evidence_ids: list[str] = Field(default_factory=list)


class PaJustification(TaskOutput):
    letter: str
    criteria: list[CriterionAssessment]
    citations: list[str]

    def cited_ids(self) -> list[str]:
        return [*self.citations, *(i for c in self.criteria for i in c.evidence_ids)]


# --- soap_note (seed P4, P14) ----------------------------------------------------------------------


class TemplateItem(BaseModel):
    """One element a specialty's note must document (careflow/ambient/templates.py)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    terms: list[str] = Field(default_factory=list)  # words that show it was documented (offline check)


class SoapNoteInput(TaskInput):
    specialty: str = "general medicine"
    encounter_id: str = ""
    # The specialty template: what the note must cover; what the encounter never covered is a gap.
    template: list[TemplateItem] = Field(default_factory=list)


class IcdSuggestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    description: str
    evidence_ids: list[str] = Field(min_length=1)


class SoapNote(TaskOutput):
    subjective: str
    objective: str
    assessment: str
    plan: str
    icd10_suggestions: list[IcdSuggestion] = Field(max_length=25)  # P14: up to 25 codes per encounter
    citations: list[str]

    def cited_ids(self) -> list[str]:
        return [*self.citations, *(i for s in self.icd10_suggestions for i in s.evidence_ids)]


# --- note_draft (seed P9): the fine-tuned note model's feature -----------------------------------------


class NoteDraftInput(TaskInput):
    """The encounter context a note is drafted from: no identifiers (ages over 89 are grouped)."""

    visit: str = Field("follow-up", max_length=40)
    age: int = Field(ge=0, le=130)
    sex: str = Field(max_length=16)
    conditions: list[str] = Field(default_factory=list, max_length=10)  # display names
    medications: list[str] = Field(default_factory=list, max_length=10)


class NoteDraft(TaskOutput):
    note: str  # SOAP sections in order: SUBJECTIVE:, OBJECTIVE:, ASSESSMENT:, PLAN:


# --- lab_urgency (seed P7) -------------------------------------------------------------------------


class LabUrgencyInput(TaskInput):
    test: str
    loinc: str = ""
    value: str  # as reported, numeric or text
    units: str = ""
    reference_range: str = ""
    abnormal_flags: list[str] = Field(default_factory=list)
    rule_urgency: Literal["critical", "high", "low"] | None = None  # the deterministic rules' floor
    rule_reasons: list[str] = Field(default_factory=list)
    baseline: list[float] = Field(default_factory=list)  # the patient's recent values of the same test
    context_missing: list[str] = Field(default_factory=list)  # what the context step could not read

    @field_validator("value", mode="before")
    @classmethod
    def _as_reported(cls, v: object) -> object:
        return format(v, "g") if isinstance(v, int | float) and not isinstance(v, bool) else v


class LabUrgency(TaskOutput):
    urgency: Literal["critical", "high", "low"]
    clinical_narrative: str
    suggested_action: str
    citations: list[str]


# --- readmission_narrative (seed P11) -------------------------------------------------------------


class RiskFactor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evidence_id: str  # the factor's evidence item ("factor:1"): what the narrative cites
    name: str  # what it means to a care-coordination nurse, e.g. "admissions in the prior 12 months"
    value: str = ""
    contribution: float = 0.0  # log-odds the factor added to this patient's score (the model's own)


class ReadmissionNarrativeInput(TaskInput):
    risk_score: float = Field(ge=0.0, le=1.0)
    risk_tier: str = ""
    model_version: str = ""
    factors: list[RiskFactor] = Field(default_factory=list, max_length=3)  # the model's top 3


class ReadmissionNarrative(TaskOutput):
    narrative: str  # "high risk because of ...; suggested interventions ..."
    top_factors: list[str]  # the factor names, in the order the narrative gives them
    interventions: list[str]
    citations: list[str]  # factor evidence ids only


def factor_evidence(factors: list[RiskFactor]) -> list[Evidence]:
    """The only evidence a readmission narrative gets: the model's factors (no chart, no free text)."""
    return [
        Evidence(
            id=f.evidence_id,
            kind="model-factor",
            title=f.name,
            text=f"{f.name}: {f.value or 'missing'}; adds {f.contribution:+.2f} log-odds to the score",
        )
        for f in factors
    ]


# --- rag_answer (seed P1, P13) ---------------------------------------------------------------------


class SourceMetadata(BaseModel):
    document_title: str = ""
    section: str = ""
    effective_date: str = ""


class RagAnswerInput(TaskInput):
    question: str
    # Citation metadata of each chunk, keyed by evidence id (the knowledge base stores it per chunk).
    sources: dict[str, SourceMetadata] = Field(default_factory=dict)


class RagCitation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evidence_id: str
    document_title: str
    section: str = ""
    effective_date: str = ""


class RagAnswer(TaskOutput):
    answer: str
    citations: list[RagCitation]
    disclaimer: str

    def cited_ids(self) -> list[str]:
        return [c.evidence_id for c in self.citations]


# --- registry --------------------------------------------------------------------------------------


def _attr(value: str) -> str:
    return value.replace('"', "&quot;")  # keeps the attribute well-formed; ids never carry quotes


def render_evidence(evidence: list[Evidence]) -> str:
    """The retrieved context as one text block: the cacheable part of a prompt after the system."""
    if not evidence:
        return "<evidence>\n(none provided)\n</evidence>"
    parts = []
    for e in evidence:
        title = f' title="{_attr(e.title)}"' if e.title else ""
        parts.append(f'<item id="{_attr(e.id)}" kind="{_attr(e.kind)}"{title}>\n{e.text}\n</item>')
    return "<evidence>\n" + "\n".join(parts) + "\n</evidence>"


_RULES = """Rules:
- Use only facts stated in the evidence block or the task input. Never invent diagnoses, codes, values,
  dates, medications or guideline content.
- Cite evidence by its exact id (the id attribute of an <item>); cite no other ids.
- Whatever the task needs but the evidence does not contain goes into "missing_information".
- Respond with one JSON object that validates against the JSON schema below: no prose, no code fences."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    input_model: type[TaskInput]
    output_model: type[TaskOutput]
    instructions: str
    default_tier: Tier
    contains_phi: bool
    max_tokens: int
    disclaimer: Callable[[BaseModel], bool] | None = None  # None: the task carries no disclaimer

    @cached_property  # stable text: the prompt-cache prefix of every call of the task
    def system_prompt(self) -> str:
        schema = json.dumps(self.output_model.model_json_schema(), sort_keys=True)
        return f"{self.instructions}\n\n{_RULES}\n\nJSON schema of your answer:\n{schema}"

    def build_request(
        self, task_input: BaseModel | Mapping[str, Any], evidence: list[Evidence], tier: Tier | None = None
    ) -> CompletionRequest:
        """Validate the input and build the request; `tier` efficient gets a smaller output budget."""
        parsed = self.input_model.model_validate(
            task_input.model_dump() if isinstance(task_input, BaseModel) else task_input
        )
        data = parsed.model_dump(mode="json")
        user = (
            f"Task: {self.name}\nTask input (JSON):\n{json.dumps(data, sort_keys=True)}\n\n"
            "Answer with the JSON object only."
        )
        max_tokens = self.max_tokens // 2 if tier == Tier.EFFICIENT else self.max_tokens
        return CompletionRequest(
            system=self.system_prompt,
            messages=[Message(role="user", content=user)],
            max_tokens=max_tokens,
            temperature=0.0,
            task=self.name,
            task_input=data,
            evidence=list(evidence),
            contains_phi=self.contains_phi,
        )


def _rag_disclaimer(parsed: BaseModel) -> bool:
    return isinstance(parsed, RagAnswer) and bool(parsed.disclaimer.strip())


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="pa_justification",
            input_model=PaJustificationInput,
            output_model=PaJustification,
            instructions=(
                "You draft prior-authorization justification letters for clinical staff to review. "
                "From the patient's diagnoses (Condition), prior treatments (MedicationRequest, "
                "Procedure) and the clinical guideline evidence, write a letter to the payer and assess "
                "each payer criterion of the task input as met, not_met or unknown, citing the evidence "
                "ids that support the assessment. When reviewer_comments are given, the letter is a "
                "redraft that addresses them. The letter is a draft: it is never submitted without "
                "clinician approval."
            ),
            default_tier=Tier.FRONTIER,
            contains_phi=True,
            max_tokens=4096,
        ),
        TaskSpec(
            name="note_draft",
            input_model=NoteDraftInput,
            output_model=NoteDraft,
            instructions=(
                "You draft a clinical note in SOAP format (SUBJECTIVE:, OBJECTIVE:, ASSESSMENT:, PLAN:) "
                "for the encounter context given, in the hospital's house style, for the physician to "
                "complete and sign. Never invent identifiers."
            ),
            default_tier=Tier.STANDARD,
            contains_phi=True,
            max_tokens=1024,
        ),
        TaskSpec(
            name="soap_note",
            input_model=SoapNoteInput,
            output_model=SoapNote,
            instructions=(
                "You draft a SOAP note (Subjective, Objective, Assessment, Plan) from a de-identified "
                "encounter transcript and the patient's record, for the physician to review and sign. "
                "Suggest ICD-10-CM codes only where the code appears in the evidence, each with the "
                "evidence ids that support it. Keep [PATIENT] placeholders as they are. Cover every element "
                "of the specialty template; list each one the encounter did not cover in "
                "missing_information, as 'Template: <element>: not documented'."
            ),
            default_tier=Tier.FRONTIER,
            contains_phi=True,
            max_tokens=4096,
        ),
        TaskSpec(
            name="lab_urgency",
            input_model=LabUrgencyInput,
            output_model=LabUrgency,
            instructions=(
                "You assess how urgent a laboratory result is for this patient, given the rules' finding, "
                "the patient's baseline and active conditions. Urgency is critical, high or low and is "
                "never lower than the task input's rule_urgency. Write a short clinical narrative and "
                "the suggested next action for the responsible clinician."
            ),
            default_tier=Tier.EFFICIENT,
            contains_phi=True,
            max_tokens=1024,
        ),
        TaskSpec(
            name="readmission_narrative",
            input_model=ReadmissionNarrativeInput,
            output_model=ReadmissionNarrative,
            instructions=(
                "You explain a 30-day readmission risk score computed by a gradient-boosting model to a "
                "care-coordination team. Do not re-score the patient and do not add factors: say why the "
                "risk is high using only the model's factors given as evidence, citing each by its "
                "evidence id, then suggest care-coordination interventions that address those factors."
            ),
            default_tier=Tier.STANDARD,
            contains_phi=True,
            max_tokens=1024,
        ),
        TaskSpec(
            name="rag_answer",
            input_model=RagAnswerInput,
            output_model=RagAnswer,
            instructions=(
                "You answer a clinician's knowledge question from the retrieved guideline passages only. "
                "Give a concise answer with 2-3 citations, each with the document title, section and "
                "effective date of the passage, and include this disclaimer verbatim: "
                f"{CLINICAL_DISCLAIMER!r}. If the passages do not answer the question, say so."
            ),
            default_tier=Tier.STANDARD,
            contains_phi=False,
            max_tokens=1024,
            disclaimer=_rag_disclaimer,
        ),
    )
}


_BY_INPUT: dict[type[TaskInput], TaskSpec] = {spec.input_model: spec for spec in TASKS.values()}


def task_spec(task: str) -> TaskSpec:
    """The task a request names (its wire name, e.g. in a CompletionRequest or an activity input)."""
    try:
        return TASKS[task]
    except KeyError:
        raise KeyError(f"unknown careflow task {task!r} (known: {', '.join(sorted(TASKS))})") from None


def spec_for(task_input: TaskInput | type[TaskInput]) -> TaskSpec:
    """The task whose input this is: callers pass a typed input, never a task name."""
    kind = task_input if isinstance(task_input, type) else type(task_input)
    try:
        return _BY_INPUT[kind]
    except KeyError:
        raise KeyError(f"{kind.__name__} is not the input of a careflow task") from None

"""The offline provider: deterministic, grounded drafting of every careflow task, in-process.

It is the embedded default when no API key is configured and the last-resort fallback.  Each draft is
built only from the request's evidence and task input with the rules of `careflow.llm.offline_rules`
and fixed templates: facts are copied, never generated; every statement cites its evidence id; what
the task needs but the evidence lacks is listed in `missing_information`.  The same request always
yields the same bytes (evidence is taken in id order, so its order in the request does not matter).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from careflow.llm import offline_rules as r
from careflow.llm.tasks import (
    CLINICAL_DISCLAIMER,
    TASKS,
    IcdSuggestion,
    LabUrgency,
    LabUrgencyInput,
    NoteDraft,
    NoteDraftInput,
    PaJustification,
    PaJustificationInput,
    RagAnswer,
    RagAnswerInput,
    RagCitation,
    ReadmissionNarrative,
    ReadmissionNarrativeInput,
    SoapNote,
    SoapNoteInput,
    TaskOutput,
    render_evidence,
)
from careflow.llm.types import CompletionRequest, CompletionResponse, Evidence, ProviderError, Usage
from careflow.validation import error_fields

ENGINE_VERSION = "1.0.0"
DRAFT_NOTICE = (
    "DRAFT prepared offline by careflow from the cited records only; it must be reviewed and approved "
    "by the treating clinician before use."
)


def _tag(ids: list[str]) -> str:
    return " [" + ", ".join(ids) + "]" if ids else ""


def _of(evidence: list[Evidence], *categories: r.Category) -> list[Evidence]:
    return [e for e in evidence if r.category(e) in categories]


def _bullets(lines: list[str], empty: str) -> str:
    return "\n".join(f"- {line}" for line in lines) if lines else f"- {empty}"


# --- pa_justification --------------------------------------------------------------------------------


def draft_pa_justification(inp: PaJustificationInput, evidence: list[Evidence]) -> PaJustification:
    record = [e for e in evidence if r.category(e) != "guideline"]
    conditions = _of(evidence, "condition")
    treatments = _of(evidence, "treatment")
    results = _of(evidence, "observation")
    focus = r.terms(inp.requested_item + " " + " ".join(r.describe(c) for c in conditions))
    ranked = sorted(
        ((r.relevance(focus, f"{g.title} {g.text}"), g) for g in _of(evidence, "guideline")),
        key=lambda sg: (-sg[0], sg[1].id),
    )
    guidelines = [g for score, g in ranked if score > 0][:3]

    findings = [(c, r.assess_criterion(c, record)) for c in inp.criteria]
    missing = []
    if not conditions:
        missing.append("No diagnosis (Condition) in the evidence: the indication cannot be stated.")
    if not treatments:
        missing.append("No prior treatment (MedicationRequest or Procedure) in the evidence.")
    if not guidelines:
        missing.append(f"No clinical guideline evidence relevant to {inp.requested_item}.")
    if not inp.criteria:
        missing.append("No payer criteria were provided, so none could be assessed.")
    missing += [f"Not documented in the evidence: {c}" for c, f in findings if f.status == "unknown"]

    status_text = {"met": "met", "not_met": "NOT met", "unknown": "not documented in the available record"}
    met = sum(1 for _, f in findings if f.status == "met")
    letter = "\n".join(
        [
            f"To: {inp.payer or 'the payer'}, utilization management",
            f"Re: Prior authorization request for {inp.requested_item}"
            + (f" (order {inp.order_id})" if inp.order_id else ""),
            "",
            DRAFT_NOTICE,
            "",
            f"We request prior authorization of {inp.requested_item} for this patient, "
            "on the basis of the clinical record summarised below.",
            "",
            "Diagnoses:",
            _bullets([r.describe(c) + _tag([c.id]) for c in conditions], "None documented in the evidence."),
            "",
            "Prior and current treatments:",
            _bullets([r.describe(t) + _tag([t.id]) for t in treatments], "None documented in the evidence."),
            "",
            *(
                ["Recent results:", _bullets([r.describe(o) + _tag([o.id]) for o in results], ""), ""]
                if results
                else []
            ),
            "Supporting clinical guidance:",
            _bullets(
                [f'{g.title or g.id}: "{r.best_sentence(focus, g.text)}"' + _tag([g.id]) for g in guidelines],
                "No relevant guideline evidence was available.",
            ),
            "",
            "Payer criteria:",
            _bullets(
                [f"{c}: {status_text[f.status]}" + _tag(f.evidence_ids) for c, f in findings],
                "No payer criteria were provided.",
            ),
            "",
            *(
                ["Revised at the reviewer's request:", _bullets([inp.reviewer_comments.strip()], ""), ""]
                if inp.reviewer_comments.strip()
                else []
            ),
            f"Summary: {met} of {len(findings)} payer criteria are documented as met in the cited record."
            + (" Missing information:" if missing else ""),
            *(f"- {m}" for m in missing),
        ]
    )
    citations = list(
        dict.fromkeys(
            [
                *(e.id for e in conditions + treatments + results + guidelines),
                *(i for _, f in findings for i in f.evidence_ids),
            ]
        )
    )
    return PaJustification.model_validate(
        {
            "letter": letter,
            "criteria": [
                {"criterion": c, "status": f.status, "evidence_ids": f.evidence_ids} for c, f in findings
            ],
            "missing_information": missing,
            "citations": citations,
        }
    )


# --- soap_note -----------------------------------------------------------------------------------------

_CLINICIAN = ("dr", "doctor", "physician", "clinician", "provider", "nurse", "np", "pa")
_OTHER_SPEAKERS = ("family", "caregiver", "mother", "father", "wife", "husband", "daughter", "son", "speaker")
_ASSESS = (
    "assessment",
    "likely",
    "consistent with",
    "diagnos",
    "impression",
    "i think",
    "suspect",
    "suggest",
)
_PLAN = (
    "plan", "start", "continue", "stop", "increase", "decrease", "order", "refer", "follow up", "follow-up",
    "schedule", "prescri", "recheck", "return", "we will", "we'll", "i'll", "i will", "come back",
)  # fmt: skip
_OBJECTIVE = (
    "exam", "blood pressure", "heart rate", "pulse", "temperature", "lungs", "auscultat", "weight",
    "saturation", "spo2", "oxygen", "mmhg", "bpm", "tender", "swelling", "edema", "murmur", "palpat",
    "vitals", "reflex", "range of motion", "respiratory rate",
)  # fmt: skip
_PER_SECTION = 8
# Words of a diagnosis's name that do not say which diagnosis it is (stemmed, as offline_rules.terms).
_GENERIC_TERMS = frozenset(
    "pain disease chronic acute essential primary unilateral bilateral right left stage organism "
    "unspecified disorder mellitus syndrome".split()
)


def _speaker_role(label: str) -> str | None:
    """The role a speaker label names; None when the text before a colon is not a speaker label."""
    words = label.strip().lower().replace(".", " ").replace("_", " ").split()
    if not words or len(words) > 4:
        return None
    if any(w in _CLINICIAN for w in words):
        return "clinician"
    if any("patient" in w or w == "pt" for w in words):
        return "patient"
    return "other" if any(w in _OTHER_SPEAKERS for w in words) else None


def _utterances(transcript: Evidence) -> list[tuple[str, str]]:
    """(role, sentence) pairs of a diarized transcript: lines like 'PHYSICIAN: ...', 'PATIENT: ...'.
    A line without a speaker label ("BP: 138/84") continues the previous speaker's turn."""
    out: list[tuple[str, str]] = []
    role = "other"
    for line in transcript.text.splitlines():
        label, sep, said = line.partition(":")
        named = _speaker_role(label) if sep else None
        if named is not None:
            role, line = named, said
        out += [(role, s) for s in r.sentences(line)]
    return out


def _section(picked: list[tuple[str, str]], empty: str) -> str:
    if not picked:
        return empty
    ids = list(dict.fromkeys(i for i, _ in picked))
    return " ".join(s for _, s in picked[:_PER_SECTION]) + _tag(ids)


def draft_soap_note(inp: SoapNoteInput, evidence: list[Evidence]) -> SoapNote:
    transcripts = _of(evidence, "transcript")
    subjective: list[tuple[str, str]] = []
    objective: list[tuple[str, str]] = []
    assessment: list[tuple[str, str]] = []
    plan: list[tuple[str, str]] = []
    for t in transcripts:
        for role, s in _utterances(t):
            low = s.lower()
            if role != "clinician":
                if len(s.split()) >= 3:
                    subjective.append((t.id, s))
            elif s.endswith("?"):
                continue  # a question is not a finding
            elif any(c in low for c in _ASSESS):
                assessment.append((t.id, s))
            elif any(c in low for c in _PLAN):
                plan.append((t.id, s))
            elif any(c in low for c in _OBJECTIVE):
                objective.append((t.id, s))
    objective += [(o.id, r.describe(o)) for o in _of(evidence, "observation")]

    # what the clinician said, sentence by sentence: a note codes the diagnoses the physician addressed,
    # not every word of the patient's review of systems
    said = {t.id: [set(r.terms(x)) for role, x in _utterances(t) if role == "clinician"] for t in transcripts}
    suggestions: list[IcdSuggestion] = []
    for c in _of(evidence, "condition"):
        description = r.name_of(c)
        distinct = [t for t in r.terms(description) if not r.ICD10.fullmatch(t.upper())]
        specific = [t for t in distinct if t not in _GENERIC_TERMS] or distinct
        needed = min(len(specific), 2)
        # discussed: one of the clinician's sentences names it ("your hypertension", "osteoarthritis of the
        # right knee"), not its words scattered over the visit ("low mood" ... "back stiffness")
        discussed = [
            t.id for t in transcripts if any(sum(d in s for d in specific) >= needed for s in said[t.id])
        ]
        for code in r.icd10_codes(f"{c.title} {c.text}"):
            if discussed and code not in {s.code for s in suggestions} and len(suggestions) < 25:
                suggestions.append(
                    IcdSuggestion(code=code, description=description, evidence_ids=[c.id, *discussed])
                )
    assessment += [
        (s.evidence_ids[0], f"Known condition discussed: {s.description} ({s.code}).") for s in suggestions
    ]

    missing = []
    if not transcripts:
        missing.append("No encounter transcript was provided: the note cannot be drafted from the encounter.")
    for name, picked in (
        ("Subjective", subjective),
        ("Objective", objective),
        ("Assessment", assessment),
        ("Plan", plan),
    ):
        if not picked:
            missing.append(f"{name}: nothing documented in the transcript or record.")
    if transcripts and not suggestions:
        missing.append("No coded diagnosis (ICD-10-CM) in the record matches what was discussed.")
    whole = " ".join(t.text for t in transcripts).lower()
    for item in inp.template:
        if transcripts and not any(term in whole for term in item.terms):
            missing.append(f"Template: {item.name}: not documented")
    empty = "Not documented in the evidence provided."
    cited = [i for part in (subjective, objective, assessment, plan) for i, _ in part]
    return SoapNote(
        subjective=_section(subjective, empty),
        objective=_section(objective, empty),
        assessment=_section(assessment, empty),
        plan=_section(plan, empty),
        icd10_suggestions=suggestions,
        missing_information=missing,
        citations=list(dict.fromkeys(cited + [i for s in suggestions for i in s.evidence_ids])),
    )


# --- lab_urgency -----------------------------------------------------------------------------------------

_ACTIONS = {
    "critical": "Notify the responsible physician now to review this result and the patient's condition.",
    "high": "Review this result with the patient's recent trend and active conditions today.",
    "low": "No urgent action from this result; review it with the routine results.",
}


def _flag_urgency(flags: list[str]) -> str:
    upper = {f.upper() for f in flags}
    if upper & {"HH", "LL", "AA", "<<", ">>"}:
        return "critical"
    return "high" if upper & {"H", "L", "A", "<", ">"} else "low"


def draft_lab_urgency(inp: LabUrgencyInput, evidence: list[Evidence]) -> LabUrgency:
    urgency = inp.rule_urgency or _flag_urgency(inp.abnormal_flags)
    detail = "; ".join(
        p
        for p in (
            f"reference range {inp.reference_range}" if inp.reference_range else "",
            f"flags {', '.join(inp.abnormal_flags)}" if inp.abnormal_flags else "",
        )
        if p
    )
    parts = [
        f"{inp.test} {inp.value}{' ' + inp.units if inp.units else ''}" + (f" ({detail})." if detail else ".")
    ]
    if inp.rule_urgency:
        parts.append(
            f"Rule assessment: {inp.rule_urgency}"
            + (f" ({'; '.join(inp.rule_reasons)})." if inp.rule_reasons else ".")
        )
    else:
        parts.append(f"Urgency {urgency} from the result's abnormal flags.")
    if inp.baseline:
        median = statistics.median(inp.baseline)
        units = f" {inp.units}" if inp.units else ""
        parts.append(f"Patient baseline: median {median:g}{units} over {len(inp.baseline)} prior results.")
    conditions = _of(evidence, "condition")[:5]
    priors = _of(evidence, "observation")[:3]
    if conditions:
        parts.append(
            "Active conditions: " + "; ".join(r.describe(c) + _tag([c.id]) for c in conditions) + "."
        )
    if priors:
        parts.append("Related results: " + "; ".join(r.describe(o) + _tag([o.id]) for o in priors) + ".")
    missing = list(inp.context_missing)
    if not inp.baseline and not priors:
        missing.append(f"No prior {inp.test} results for comparison with the patient's baseline.")
    if not conditions:
        missing.append("No active conditions in the evidence.")
    if not inp.rule_urgency and not inp.abnormal_flags:
        missing.append("Neither a rule finding nor abnormal flags were provided for this result.")
    return LabUrgency(
        urgency=urgency,
        clinical_narrative=" ".join(parts),
        suggested_action=_ACTIONS[urgency],
        missing_information=missing,
        citations=[e.id for e in conditions + priors],
    )


# --- readmission_narrative -----------------------------------------------------------------------------

# Factor keyword -> care-coordination intervention (a transparent table; P11's "suggested interventions").
_INTERVENTIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("admission", "ed", "visit"), "transitional-care call within 48 hours of discharge"),
    (("medication",), "pharmacist medication reconciliation before discharge"),
    (("comorbidity", "charlson"), "follow-up with the primary-care physician within 7 days"),
    (("hemoglobin",), "repeat hemoglobin and anemia work-up at the follow-up visit"),
    (("sodium",), "repeat sodium within one week; review diuretics and fluid advice"),
    (("creatinine",), "renal function recheck within one week; review renally dosed medications"),
    (("disposition",), "handover call to the receiving facility or home-health agency"),
    (("stay", "emergency"), "early follow-up appointment within 7 days"),
    (("age",), "home-safety and caregiver-support assessment"),
)
_DEFAULT_INTERVENTION = "primary-care follow-up within 7 days of discharge"


def draft_readmission_narrative(
    inp: ReadmissionNarrativeInput, evidence: list[Evidence]
) -> ReadmissionNarrative:
    """Why the score is what it is, from the model's factors alone (each cited), and what to do."""
    given = {e.id for e in evidence}
    top = [f for f in sorted(inp.factors, key=lambda f: -f.contribution) if f.evidence_id in given][:3]
    missing = [f"The factor {f.name} came without its evidence item." for f in inp.factors
               if f.evidence_id not in given]  # fmt: skip
    tier = f"{inp.risk_tier} risk" if inp.risk_tier else "Risk"
    head = f"{tier.capitalize()} of readmission within 30 days (score {inp.risk_score:.2f}"
    head += f", model version {inp.model_version})" if inp.model_version else ")"
    interventions: list[str] = []
    for f in top:
        words = set(f.name.lower().replace("(", " ").replace(")", " ").split())
        chosen = next(
            (text for keys, text in _INTERVENTIONS if any(w.startswith(k) for w in words for k in keys)),
            _DEFAULT_INTERVENTION,
        )
        if chosen not in interventions:
            interventions.append(chosen)
    if top:
        because = "; ".join(
            f"{f.name}" + (f" ({f.value})" if f.value else "") + _tag([f.evidence_id]) for f in top
        )
        parts = [f"{head} because of: {because}."]
        parts.append("Suggested interventions: " + "; ".join(interventions) + ".")
    else:
        parts = [f"{head}."]
        missing.append("The model reported no contributing factors.")
    parts.append(
        "The score comes from the model; this narrative explains it and does not re-score the patient."
    )
    return ReadmissionNarrative(
        narrative=" ".join(parts),
        top_factors=[f.name for f in top],
        interventions=interventions,
        missing_information=missing,
        citations=[f.evidence_id for f in top],
    )


# --- rag_answer --------------------------------------------------------------------------------------------


def draft_rag_answer(inp: RagAnswerInput, evidence: list[Evidence]) -> RagAnswer:
    query = r.terms(inp.question)
    chunks = [e for e in evidence if r.category(e) in ("guideline", "other")]
    scored = sorted(
        ((r.relevance(query, f"{e.title} {e.text}"), e) for e in chunks), key=lambda se: (-se[0], se[1].id)
    )
    best = scored[0][0] if scored else 0
    used = [e for score, e in scored if score > 0 and score * 2 >= best][:3]
    citations: list[RagCitation] = []
    sentences: list[str] = []
    for e in used:
        title, section, effective = r.source_metadata(e)
        meta = inp.sources.get(e.id)
        if meta is not None:
            title, section, effective = (
                meta.document_title or title,
                meta.section or section,
                meta.effective_date or effective,
            )
        citations.append(
            RagCitation(evidence_id=e.id, document_title=title, section=section, effective_date=effective)
        )
        where = f"{title}, {section}" if section else title
        sentences.append(f"According to {where}: {r.best_sentence(query, e.text)}" + _tag([e.id]))
    missing = [] if used else [f"No retrieved passage addresses the question: {inp.question}"]
    answer = (
        " ".join(sentences) if used else "The retrieved knowledge-base passages do not answer this question."
    )
    return RagAnswer(
        answer=answer, citations=citations, disclaimer=CLINICAL_DISCLAIMER, missing_information=missing
    )


def draft_note(inp: NoteDraftInput, evidence: list[Evidence]) -> NoteDraft:
    """The house template, filled from the encounter context (what the fine-tuned model learns to do)."""
    conditions = ", ".join(inp.conditions) or "no chronic conditions on record"
    meds = ", ".join(inp.medications) or "no current medications"
    note = (
        f"SUBJECTIVE: {inp.age}-year-old {inp.sex} seen for a {inp.visit} visit. History of {conditions}.\n"
        f"OBJECTIVE: Current medications: {meds}. Examination findings to be documented.\n"
        f"ASSESSMENT: {conditions.capitalize()}.\n"
        "PLAN: Continue current management; follow up as scheduled."
    )
    missing = ["Examination findings: not documented", "Vital signs: not documented"]
    return NoteDraft(note=note, missing_information=missing)


# Keyed by the task's input type; a test checks that every task in careflow.llm.tasks has one.
DRAFTERS: dict[type[BaseModel], Callable[[Any, list[Evidence]], TaskOutput]] = {
    PaJustificationInput: draft_pa_justification,
    SoapNoteInput: draft_soap_note,
    NoteDraftInput: draft_note,
    LabUrgencyInput: draft_lab_urgency,
    ReadmissionNarrativeInput: draft_readmission_narrative,
    RagAnswerInput: draft_rag_answer,
}
DRAFTED_TASKS = sorted(spec.name for spec in TASKS.values() if spec.input_model in DRAFTERS)


def canonical_evidence(evidence: list[Evidence]) -> list[Evidence]:
    """Evidence in id order, one item per id (the first given), so request order cannot change a draft."""
    first: dict[str, Evidence] = {}
    for e in evidence:
        first.setdefault(e.id, e)
    return [first[k] for k in sorted(first)]


def draft(task: str, task_input: dict[str, object], evidence: list[Evidence]) -> TaskOutput:
    spec = TASKS[task]
    parsed: BaseModel = spec.input_model.model_validate(task_input)
    return DRAFTERS[spec.input_model](parsed, canonical_evidence(evidence))


def _estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


class OfflineProvider:
    """Drafts in-process: nothing leaves the process, so PHI is permitted."""

    name = "offline"
    phi_permitted = True

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        if request.task in DRAFTED_TASKS:
            try:
                text = draft(request.task, request.task_input, request.evidence).model_dump_json()
            except ValidationError as exc:
                where = error_fields(exc)
                raise ProviderError(self.name, "bad_request", f"task input invalid at: {where}") from None
        else:
            text = (
                "The offline engine drafts careflow tasks only ("
                + ", ".join(DRAFTED_TASKS)
                + "); no language model is configured for free-form requests."
            )
        prompt = (
            request.system + "".join(m.content for m in request.messages) + render_evidence(request.evidence)
        )
        return CompletionResponse(
            text=text,
            provider=self.name,
            model=model,
            finish_reason="end_turn",
            usage=Usage(input_tokens=_estimate_tokens(prompt), output_tokens=_estimate_tokens(text)),
            metadata={"engine": "offline", "engine_version": ENGINE_VERSION, "task": request.task or ""},
        )

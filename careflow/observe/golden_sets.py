"""The golden queries of the AI features careflow serves through its gateway (seed P5, layer 3).

One set per feature, 60 cases each, in `careflow/observe/golden/<feature>.jsonl`: the task input, the
evidence it is asked over and the expected output, `{"id", "input", "evidence", "expected"}`.  The
inputs come from careflow's own synthetic data, as the pipelines build them:

- rag_answer: the knowledge base's evaluation questions (careflow/kb/eval/golden_set.jsonl) over the
  starter documents' passages of the sections that answer them;
- lab_urgency: results of every test with careflow limits, in each band, with and without a baseline,
  as the lab-alert pipeline asks (careflow.labs.rules.urgency_task);
- readmission_narrative: the model's top factors, as the scoring step passes them;
- pa_justification: synthetic patients' prior-auth orders with their record summaries, the payer
  policy's criteria and the guideline passages, from the starter knowledge base.

The expected outputs are the answers of the version accepted when the set was made (the offline
engine, `python -m careflow.observe.golden_sets` rewrites the files), for clinicians to review and
edit: a golden run measures how far a version drifts from them, relative to the baseline.  The note
model's set is built from a held-out export instead (careflow.finetune.prep.golden_cases).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from careflow.fhir import codes
from careflow.fhir.synthetic import patient_bundle
from careflow.kb.chunker import Chunk, chunk_document
from careflow.kb.docwriter import STARTER_DIR
from careflow.kb.evaluation import load_golden, matches
from careflow.kb.extract import extract
from careflow.labs.rules import LIMITS, assess_rules, urgency_task
from careflow.llm import tasks
from careflow.llm.config import Target
from careflow.llm.errors import StructuredOutputFailed
from careflow.llm.gateway import Gateway
from careflow.llm.teams import PIPELINES_TEAM
from careflow.llm.types import Evidence
from careflow.models.lab_alert import LabResult, PatientLabContext
from careflow.models.model_promotion import GATEWAY_FEATURES
from careflow.models.prior_auth import PA_MEASUREMENTS
from careflow.prior_auth.criteria import policy_criteria
from careflow.prior_auth.summaries import (
    latest_measurements,
    loinc,
    order_info,
    ref,
    summarise,
    summarise_measurement,
)
from careflow.readmission.features import LABELS

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
SIZE = 60
SEED = 20261206
FEATURES = GATEWAY_FEATURES
GOLDEN_USE_CASE = "golden"  # gateway calls of golden runs: their own use case in llm_calls and metrics
GATEWAY_CONCURRENCY = 4


@dataclass(frozen=True)
class TaskCase:
    case_id: str
    task_input: tasks.TaskInput
    evidence: list[Evidence]
    expected: str = ""


def answer_text(parsed: BaseModel) -> str:
    """The part of a task's answer a golden query compares with the expected output."""
    if isinstance(parsed, tasks.RagAnswer):
        return parsed.answer
    if isinstance(parsed, tasks.LabUrgency):
        return f"{parsed.urgency}. {parsed.clinical_narrative} {parsed.suggested_action}"
    if isinstance(parsed, tasks.ReadmissionNarrative):
        return parsed.narrative
    if isinstance(parsed, tasks.PaJustification):
        return parsed.letter
    raise TypeError(f"no golden answer text for {type(parsed).__name__}")


def path_of(feature: str) -> Path:
    if feature not in FEATURES:
        raise KeyError(f"no golden set for feature {feature!r} (known: {', '.join(FEATURES)})")
    return GOLDEN_DIR / f"{feature}.jsonl"


@functools.cache
def load(feature: str) -> tuple[TaskCase, ...]:
    spec = tasks.task_spec(feature)
    cases = []
    for line in path_of(feature).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        cases.append(
            TaskCase(
                case_id=row["id"],
                task_input=spec.input_model.model_validate(row["input"]),
                evidence=[Evidence.model_validate(e) for e in row["evidence"]],
                expected=row["expected"],
            )
        )
    return tuple(cases)


async def answers(
    gateway: Gateway,
    target: Target,
    cases: Sequence[TaskCase],
    key: str,
    progress: dict[str, Any],
) -> list[str]:
    """A gateway feature's answers to its golden queries, from the model pinned (no fallback), a few at
    a time; each call recorded in llm_calls under use case `golden` with the run's key + the case."""
    limit = asyncio.Semaphore(GATEWAY_CONCURRENCY)
    progress["answered"] = 0

    async def answer(case: TaskCase) -> str:
        async with limit:
            try:
                parsed, _ = await gateway.run_task(
                    PIPELINES_TEAM, GOLDEN_USE_CASE, tasks.spec_for(case.task_input).default_tier,
                    case.task_input, case.evidence, request_id=f"{key}/{case.case_id}", pinned=target,
                )  # fmt: skip
            except StructuredOutputFailed:
                return ""  # no valid answer after the corrective retry: scored as the worst answer
            finally:
                progress["answered"] += 1
            return answer_text(parsed)

    return list(await asyncio.gather(*(answer(c) for c in cases)))


# -- building the inputs -----------------------------------------------------------------------------


@functools.cache
def _starter_chunks() -> tuple[Chunk, ...]:
    return tuple(
        c for p in sorted(STARTER_DIR.iterdir()) if p.is_file() for c in chunk_document(extract(p), "default")
    )


def _passage(c: Chunk) -> Evidence:
    return Evidence(
        id=f"kb:{c.chunk_id}", kind=c.doc_type,
        title=f"{c.document_title} — {c.section} (effective {c.effective_date})", text=c.text,
    )  # fmt: skip


def _rag_cases() -> Iterator[TaskCase]:
    for item in load_golden():
        chunks = [
            c for c in _starter_chunks() if any(matches(e, c.document_id, c.section) for e in item.expected)
        ]
        if not chunks:
            continue
        evidence = [_passage(c) for c in chunks[:4]]
        sources = {
            e.id: tasks.SourceMetadata(
                document_title=c.document_title, section=c.section, effective_date=c.effective_date
            )
            for e, c in zip(evidence, chunks, strict=False)
        }
        yield TaskCase(item.id, tasks.RagAnswerInput(question=item.question, sources=sources), evidence)


def _lab_cases(rng: random.Random) -> Iterator[TaskCase]:
    known = {lab.loinc: lab for lab in codes.LABS.values()}  # troponin T is not one of them
    for i in range(SIZE):
        loinc, lim = sorted(LIMITS.items())[i % len(LIMITS)]
        lows = [v for v in (lim.critical_low, lim.high_low) if v is not None]
        highs = [v for v in (lim.high_high, lim.critical_high) if v is not None]
        edges = sorted(lows + highs)
        value = float(f"{rng.uniform(edges[0] * 0.6, edges[-1] * 1.4):.3g}")
        baseline = [round(value * rng.uniform(0.5, 1.1), 2) for _ in range(rng.randint(0, 3))]
        flags = ["HH"] if highs and value > highs[-1] else ["LL"] if lows and value < lows[0] else []
        name = known[loinc].display if loinc in known else loinc
        result = LabResult(
            result_key=f"golden-{i:03d}",
            patient_id="golden",
            loinc=loinc,
            display=name,
            value=value,
            value_text=str(value),
            units=lim.units,
            abnormal_flags=flags,
        )
        context = PatientLabContext(
            baseline=baseline, condition_codes=rng.sample(["N18.3", "E11.9", "I50.9", "I10"], 2)
        )
        task_input, evidence = urgency_task(result, context, assess_rules(result, context))
        yield TaskCase(f"lab-{i:03d}", task_input, evidence)


def _readmission_cases(rng: random.Random) -> Iterator[TaskCase]:
    names = sorted(LABELS)
    for i in range(SIZE):
        picked = rng.sample(names, rng.randint(1, 3))
        contributions = sorted((round(rng.uniform(0.05, 1.2), 2) for _ in picked), reverse=True)
        factors = [
            tasks.RiskFactor(
                evidence_id=f"factor:{n + 1}", name=LABELS[k], value=str(rng.randint(1, 12)), contribution=c
            )
            for n, (k, c) in enumerate(zip(picked, contributions, strict=True))
        ]
        score = round(rng.uniform(0.15, 0.9), 3)
        tier = "high" if score >= 0.5 else "medium" if score >= 0.3 else "low"
        task_input = tasks.ReadmissionNarrativeInput(
            risk_score=score, risk_tier=tier, model_version="golden", factors=factors
        )
        yield TaskCase(f"risk-{i:03d}", task_input, tasks.factor_evidence(factors))


_RECORD = ("Condition", "MedicationRequest", "Procedure")


def _pa_cases() -> Iterator[TaskCase]:
    policies = [c for c in _starter_chunks() if c.doc_type == "payer_policy"]
    guidelines = [c for c in _starter_chunks() if c.doc_type in ("guideline", "formulary")]
    for index in range(1, 1000):
        _, bundle = patient_bundle(SEED % 1000, index, date(2026, 1, 1))
        resources = [dict(e["resource"], id=e["fullUrl"].rsplit(":", 1)[-1]) for e in bundle["entry"]]
        orders = [
            r for r in resources if any(i.get("system") == codes.ORDER_ID for i in r.get("identifier", []))
        ]
        for n, order in enumerate(orders):
            info = order_info(f"golden-{index:03d}-{n}", order)
            covered = policy_criteria(policies, info.requested_item, info.item.code)
            if not covered.criteria:
                continue
            measured = [
                r for r in resources if r["resourceType"] == "Observation" and loinc(r) in PA_MEASUREMENTS
            ]
            newest = sorted(measured, key=lambda r: r.get("effectiveDateTime", ""), reverse=True)
            record = [
                Evidence(id=ref(r), kind="fhir", title=r["resourceType"], text=summarise(r))
                for r in resources if r["resourceType"] in _RECORD and r is not order
            ] + [
                Evidence(id=ref(r), kind="fhir", title="Observation", text=summarise_measurement(r))
                for r in latest_measurements(newest)
            ]  # fmt: skip
            item = info.item.display.split()[0].lower() if info.item.display else info.item.code
            related = [g for g in guidelines if item in g.text.lower()][:1]
            task_input = tasks.PaJustificationInput(
                requested_item=info.requested_item, payer="Golden Health Plan", order_id=info.order_id,
                criteria=covered.criteria,
            )  # fmt: skip
            yield TaskCase(
                f"pa-{index:03d}-{n}", task_input, record + [_passage(c) for c in covered.chunks + related]
            )


def build(feature: str) -> list[TaskCase]:
    """The feature's inputs (no expected outputs yet), the same on every machine."""
    rng = random.Random(f"{SEED}:{feature}")  # noqa: S311 (synthetic inputs, not secrets)
    made = {
        "rag_answer": _rag_cases,
        "lab_urgency": lambda: _lab_cases(rng),
        "readmission_narrative": lambda: _readmission_cases(rng),
        "pa_justification": _pa_cases,
    }[feature]()
    return [c for _, c in zip(range(SIZE), made, strict=False)]


def write(feature: str) -> Path:
    """Rebuild the feature's set, the expected outputs drafted by the offline engine."""
    from careflow.llm.providers.offline import draft

    path = path_of(feature)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for c in build(feature):
        expected = answer_text(draft(feature, c.task_input.model_dump(), c.evidence))
        row = {"id": c.case_id, "input": c.task_input.model_dump(mode="json"), "expected": expected,
               "evidence": [e.model_dump() for e in c.evidence]}  # fmt: skip
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    for f in FEATURES:
        print(f"{f}: {len(path_of(f).read_text().splitlines()) if write(f) else 0} cases -> {path_of(f)}")

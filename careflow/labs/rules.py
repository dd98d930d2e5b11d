"""Deterministic urgency rules for lab results: the first step of the two-step assessment (seed P7).

The rules are the safety floor: the AI assessment that follows may raise urgency, never lower it.
Thresholds follow common hospital critical-value lists (conventional US units).  Creatinine is
judged against the patient's own baseline (KDIGO AKI staging): a creatinine of 2.0 is critical for
a patient whose baseline is 0.8 and usual for a CKD patient whose baseline is 2.1.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from careflow.llm.tasks import LabUrgencyInput
from careflow.llm.types import Evidence
from careflow.models.lab_alert import LabResult, PatientLabContext, RuleFinding, Urgency


@dataclass(frozen=True)
class Limits:
    units: str
    critical_low: float | None = None
    critical_high: float | None = None
    high_low: float | None = None
    high_high: float | None = None


# LOINC -> limits
LIMITS: dict[str, Limits] = {
    "2823-3": Limits("mmol/L", critical_low=2.8, critical_high=6.2, high_low=3.0, high_high=5.5),  # potassium
    "2951-2": Limits("mmol/L", critical_low=120, critical_high=160, high_low=125, high_high=155),  # sodium
    "718-7": Limits("g/dL", critical_low=7.0, critical_high=20.0, high_low=8.0),  # hemoglobin
    "2524-7": Limits("mmol/L", critical_high=4.0, high_high=2.0),  # lactate
    "2345-7": Limits("mg/dL", critical_low=50, critical_high=400, high_low=60, high_high=300),  # glucose
    "6690-2": Limits("10*3/uL", critical_low=2.0, critical_high=30.0, high_low=3.0, high_high=15.0),  # WBC
    "6598-7": Limits("ng/mL", critical_high=0.1, high_high=0.03),  # troponin T
    "10839-9": Limits("ng/mL", critical_high=0.4, high_high=0.04),  # troponin I
    # creatinine: absolute limits only when the patient has no baseline
    "2160-0": Limits("mg/dL", critical_high=4.0, high_high=1.5),
}
CREATININE = "2160-0"
HEMOGLOBIN = "718-7"
PANIC_FLAGS = {"HH", "LL", "AA", "<<", ">>"}


def _band(value: float, lim: Limits) -> tuple[Urgency, str]:
    if lim.critical_low is not None and value < lim.critical_low:
        return Urgency.CRITICAL, f"below critical limit {lim.critical_low} {lim.units}"
    if lim.critical_high is not None and value > lim.critical_high:
        return Urgency.CRITICAL, f"above critical limit {lim.critical_high} {lim.units}"
    if lim.high_low is not None and value < lim.high_low:
        return Urgency.HIGH, f"below {lim.high_low} {lim.units}"
    if lim.high_high is not None and value > lim.high_high:
        return Urgency.HIGH, f"above {lim.high_high} {lim.units}"
    return Urgency.LOW, "within alerting limits"


def _creatinine_vs_baseline(value: float, baseline: float) -> tuple[Urgency, str]:
    ratio = value / baseline if baseline > 0 else float("inf")
    if ratio >= 3.0 or (value >= 4.0 and value - baseline >= 0.5):
        return Urgency.CRITICAL, f"{ratio:.1f}x the patient's baseline {baseline:.2f} mg/dL (KDIGO stage 3)"
    if ratio >= 2.0:
        return Urgency.HIGH, f"{ratio:.1f}x baseline {baseline:.2f} mg/dL (KDIGO stage 2)"
    if ratio >= 1.5 or value - baseline >= 0.3:
        return Urgency.HIGH, f"rise from baseline {baseline:.2f} mg/dL (KDIGO stage 1)"
    return Urgency.LOW, f"consistent with the patient's baseline {baseline:.2f} mg/dL"


def assess_rules(result: LabResult, context: PatientLabContext) -> RuleFinding:
    reasons: list[str] = []
    urgency = Urgency.LOW
    baseline = statistics.median(context.baseline) if context.baseline else None

    def raise_to(level: Urgency, reason: str) -> None:
        nonlocal urgency
        reasons.append(reason)
        if level.rank > urgency.rank:
            urgency = level

    flags = {f.upper() for f in result.abnormal_flags}
    if flags & PANIC_FLAGS and result.loinc != CREATININE:
        panic = ",".join(sorted(flags & PANIC_FLAGS))
        raise_to(Urgency.CRITICAL, f"laboratory flagged a panic value ({panic})")

    lim = LIMITS.get(result.loinc)
    if result.value is None:
        if not reasons:
            reasons.append("non-numeric result: judged by laboratory flags only")
        if flags & {"H", "L", "A"}:
            raise_to(Urgency.HIGH, "laboratory flagged the result abnormal")
        return RuleFinding(urgency=urgency, reasons=reasons, baseline_median=baseline)

    if result.loinc == CREATININE and baseline is not None:
        level, why = _creatinine_vs_baseline(result.value, baseline)
        raise_to(level, why)
    elif lim is not None:
        level, why = _band(result.value, lim)
        raise_to(level, why)
    elif flags & {"H", "L", "A"}:
        raise_to(Urgency.HIGH, "laboratory flagged the result abnormal (no careflow limits for this test)")

    if result.loinc == HEMOGLOBIN and baseline is not None and baseline - result.value >= 2.0:
        raise_to(Urgency.CRITICAL, f"drop of {baseline - result.value:.1f} g/dL from baseline {baseline:.1f}")
    if result.loinc == CREATININE and baseline is None and flags & PANIC_FLAGS:
        raise_to(Urgency.CRITICAL, "laboratory flagged a panic value and no baseline is known")
    return RuleFinding(urgency=urgency, reasons=reasons or ["no rule fired"], baseline_median=baseline)


def urgency_task(
    r: LabResult, ctx: PatientLabContext, finding: RuleFinding
) -> tuple[LabUrgencyInput, list[Evidence]]:
    """The second step's request (the gateway's `lab_urgency` task): the result, the patient's baseline
    and active conditions as evidence, the rules' finding as the floor."""
    evidence = [
        Evidence(
            id=f"lab:{r.result_key}",
            kind="lab",
            title=r.display or r.loinc,
            text=f"{r.display or r.loinc} (LOINC {r.loinc}) {r.value_text} {r.units}; reference range "
            f"{r.reference_range or 'not given'}; flags {','.join(r.abnormal_flags) or 'none'}",
        )
    ]
    if ctx.baseline:
        evidence.append(
            Evidence(
                id="lab:baseline",
                kind="lab",
                title="prior values",
                text="Prior values of the same test: " + ", ".join(map(str, ctx.baseline)),
            )
        )
    evidence += [
        Evidence(id=f"condition:{code}", kind="fhir", title="active condition", text=code)
        for code in ctx.condition_codes[:20]
    ]
    task_input = LabUrgencyInput(
        test=r.display or r.loinc,
        loinc=r.loinc,
        value=r.value_text,
        units=r.units,
        reference_range=r.reference_range,
        abnormal_flags=r.abnormal_flags,
        rule_urgency=finding.urgency.value,
        rule_reasons=finding.reasons,
        baseline=ctx.baseline,
        context_missing=ctx.missing,
    )
    return task_input, evidence

"""The FHIR resources a scored discharge writes: the RiskAssessment (every discharge) and the
care-coordination Task (high tier).  Each carries its step's idempotency identifier, so the activity's
conditional create writes it once however often it is retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from careflow.fhir import codes as c
from careflow.idempotency import STEP_SYSTEM, step_key
from careflow.models.readmission import WriteRequest

RISK_ASSESSMENT_METHOD = "urn:careflow:readmission-30d"


def risk_assessment(req: WriteRequest) -> dict[str, Any]:
    s = req.scores.champion
    rec = req.record
    return {
        "resourceType": "RiskAssessment",
        "identifier": [{"system": STEP_SYSTEM, "value": step_key(req.workflow_id, "risk-assessment")}],
        "status": "final",
        "method": {
            "coding": [{"system": RISK_ASSESSMENT_METHOD, "code": "lightgbm", "version": s.version}],
            "text": f"careflow 30-day readmission model, registry version {s.version}",
        },
        "code": {"coding": [{"system": c.SNOMED, "code": "713148004", "display": "Readmission risk"}]},
        "subject": {"reference": f"Patient/{rec.patient_id}"},
        "encounter": {"reference": f"Encounter/{rec.encounter_id}"},
        "occurrenceDateTime": datetime.now(UTC).isoformat(),
        "basis": [{"reference": ref} for ref in rec.basis],
        "prediction": [
            {
                "outcome": {"text": "Readmission within 30 days of discharge"},
                "probabilityDecimal": s.probability,
                "qualitativeRisk": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/risk-probability",
                            "code": s.tier.value,  # low | moderate | high, as the code system
                        }
                    ],
                    "text": s.tier.value,
                },
                "whenPeriod": {
                    "start": rec.discharged_at.isoformat(),
                    "end": (rec.discharged_at + timedelta(days=30)).isoformat(),
                },
            }
        ],
        "note": [
            {
                "text": "Top factors (model contributions): "
                + "; ".join(f"{f.label} ({f.contribution:+.2f})" for f in s.factors)
            }
        ]
        + ([{"text": req.narrative}] if req.narrative else []),
    }


def care_task(req: WriteRequest, risk_assessment_id: str) -> dict[str, Any]:
    s = req.scores.champion
    return {
        "resourceType": "Task",
        "identifier": [{"system": STEP_SYSTEM, "value": step_key(req.workflow_id, "care-coordination-task")}],
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": {"text": "Care coordination: high 30-day readmission risk"},
        "for": {"reference": f"Patient/{req.record.patient_id}"},
        "encounter": {"reference": f"Encounter/{req.record.encounter_id}"},
        "focus": {"reference": f"RiskAssessment/{risk_assessment_id}"},
        "authoredOn": datetime.now(UTC).isoformat(),
        "description": req.narrative or f"Readmission risk {s.probability:.2f} (top 30 %)",
        "restriction": {"period": {"end": (req.record.discharged_at + timedelta(days=2)).isoformat()}},
    }

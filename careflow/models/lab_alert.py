"""Models of the lab-alert pipeline (seed P7): one workflow per lab result, `lab-alert-<result key>`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AliasChoices, BaseModel, Field

PIPELINE = "lab-alert"  # the CareflowPipeline search attribute's value
WORKFLOW_ID_PREFIX = "lab-alert-"


def workflow_id(result_key: str) -> str:
    """One workflow per result: a redelivered HL7 message maps to the same id (ids only: PHI-free)."""
    return WORKFLOW_ID_PREFIX + result_key


class LabAlertStage(StrEnum):
    RECEIVED = "received"
    ASSESSING = "assessing"
    NO_ALERT = "no-alert"  # not critical: nobody is paged
    ALERTED = "alerted"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    UNACKNOWLEDGED = "unacknowledged"  # nobody acknowledged within ACK_GIVE_UP

    @property
    def settled(self) -> bool:
        """The alert has gone out (or was not needed): what a sender waits for."""
        return self not in (LabAlertStage.RECEIVED, LabAlertStage.ASSESSING)


class Urgency(StrEnum):
    LOW = "low"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"low": 0, "high": 1, "critical": 2}[self.value]


class LabResult(BaseModel):
    """One normalised observation (from an OBX) with what is needed to judge it."""

    result_key: str  # stable id of the result (facility + filler order + code): the workflow id's key
    patient_id: str
    loinc: str
    display: str = ""
    value: float | None
    value_text: str
    units: str = ""
    reference_range: str = ""
    abnormal_flags: list[str] = Field(default_factory=list)
    observed_at: datetime | None = None
    received_at: datetime | None = None
    # From the message itself, for an alert when the EHR does not know the MRN (PHI, encrypted):
    patient_name: str = ""
    birth_date: str = ""
    ordering_provider: str = ""
    sending_facility: str = ""


class PatientLabContext(BaseModel):
    fhir_patient_id: str | None = None  # the EHR's Patient id (the lab sends an MRN in PID-3)
    baseline: list[float] = Field(default_factory=list)  # the patient's recent values of the same test
    condition_codes: list[str] = Field(default_factory=list)  # ICD-10-CM / SNOMED of active conditions
    physician_id: str | None = None  # responsible physician (Practitioner id)
    charge_nurse_id: str | None = None
    chief_id: str | None = None
    missing: list[str] = Field(default_factory=list)  # what could not be read
    # False: no single Patient in the EHR has the MRN the lab sent.  The audit trail then names the
    # patient by `unmatched_key`, a keyed hash of the MRN, never by the MRN itself.
    patient_matched: bool = True
    unmatched_key: str | None = None
    # False: the EHR did not answer within the step's budget (workflows/retry_rules.py LAB_CONTEXT);
    # the alert then goes out from what the HL7 message itself says.
    ehr_available: bool = True

    @property
    def audit_subject(self) -> str | None:
        return self.fhir_patient_id or self.unmatched_key


class RuleFinding(BaseModel):
    urgency: Urgency
    reasons: list[str]
    baseline_median: float | None = None


class Assessment(BaseModel):
    urgency: Urgency
    rule_urgency: Urgency
    reasons: list[str]
    clinical_narrative: str = ""
    suggested_action: str = ""
    ai_engine: str = ""  # provider/model that wrote the narrative ("offline" by default)


class LabAlertInput(BaseModel):
    result: LabResult
    # `tenant` in histories recorded before the field took careflow's one name for it.
    tenant_id: str = Field("default", validation_alias=AliasChoices("tenant_id", "tenant"))
    # False only on a server without careflow's search attributes (the time-skipping test server).
    search_attributes: bool = True


class ContextRequest(BaseModel):
    patient_id: str
    loinc: str
    lookback_days: int = 365


class AssessRequest(BaseModel):
    result: LabResult
    context: PatientLabContext
    workflow_id: str


class UnmatchedPatient(BaseModel):
    """The patient as the lab message names them, when the EHR has no Patient with that MRN."""

    mrn: str
    name: str = ""
    birth_date: str = ""
    ordering_provider: str = ""
    facility: str = ""
    reason: str = "PATIENT NOT MATCHED IN THE EHR"  # or: the EHR could not be reached

    def describe(self) -> str:
        born = f", born {self.birth_date}" if self.birth_date else ""
        by = f"; ordered by {self.ordering_provider}" if self.ordering_provider else ""
        return f"{self.reason}: {self.name or 'name not sent'}{born}, MRN {self.mrn}{by}"


class AlertDelivery(BaseModel):
    result_key: str
    level: str  # "physician" | "charge_nurse" | "chief" | "lab" (unmatched patients)
    recipient_id: str | None
    patient_id: str  # the EHR's Patient id; "" when unmatched
    loinc: str
    urgency: Urgency
    summary: str  # the narrative shown to the clinician (travels encrypted)
    workflow_id: str
    unmatched: UnmatchedPatient | None = None


class DeliveryReceipt(BaseModel):
    level: str
    task_id: str  # "" while the EHR could not take the Task (it is created once the EHR is back)
    notified: bool


class AlertAck(BaseModel):
    by: str  # practitioner or user id
    role: str = "physician"
    note: str = ""


class AckRecord(BaseModel):
    by: str
    role: str
    at: datetime
    level_at_ack: str  # the escalation level the alert had reached


class LabAlertStatus(BaseModel):
    stage: LabAlertStage
    urgency: Urgency | None = None
    alerted_at: datetime | None = None
    deliveries: list[DeliveryReceipt] = Field(default_factory=list)
    acknowledged: AckRecord | None = None


class LabAlertOutput(BaseModel):
    result_key: str
    assessment: Assessment
    status: LabAlertStatus

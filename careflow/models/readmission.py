"""Models of readmission risk scoring (seed P11, P12): one workflow per discharge
(`readmission-<encounter id>`), a training workflow per model version, a nightly safety net."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from careflow.models.common import FhirId
from careflow.readmission.features import DischargeFeatures

PIPELINE = "readmission"  # the CareflowPipeline search attribute's value
WORKFLOW_ID_PREFIX = "readmission-"
TRAINING_ID_PREFIX = "readmission-training-"
NIGHTLY_SCHEDULE_ID = "readmission-nightly"  # the Temporal Schedule (`careflow risk schedule`)
NIGHTLY_ID_PREFIX = "readmission-nightly-"


def workflow_id(encounter_id: str) -> str:
    """One workflow per discharge: ADT, the FHIR event and the nightly run all map to the same id."""
    return WORKFLOW_ID_PREFIX + encounter_id


def training_id(seed: int, discharges: int, nonce: str) -> str:
    return f"{TRAINING_ID_PREFIX}{discharges}-s{seed}-{nonce}"


class ModelAlias(StrEnum):
    CHAMPION = "champion"  # scores the worklist
    CHALLENGER = "challenger"  # scores beside it, in shadow: logged, never shown


class RiskTier(StrEnum):
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"  # the top 30 % by score: narrative, care-coordination Task


class DischargeSource(StrEnum):
    ADT = "adt"  # HL7 v2 ADT^A03 over MLLP
    FHIR = "fhir"  # POST /v1/events/discharges (an Encounter became finished)
    NIGHTLY = "nightly"  # the readmission-nightly safety net found it unscored


class ReadmissionStage(StrEnum):
    RECEIVED = "received"
    READING = "reading"  # features from the EHR
    SCORING = "scoring"
    WRITING = "writing"  # RiskAssessment, Task, worklist
    SCORED = "scored"
    NOT_A_DISCHARGE = "not-a-discharge"  # the encounter is not a finished inpatient stay
    UNKNOWN_ENCOUNTER = "unknown-encounter"  # the EHR never knew the encounter within the budget
    NO_MODEL = "no-model"  # nothing is champion yet: `careflow risk train`

    @property
    def settled(self) -> bool:
        return self in (
            ReadmissionStage.SCORED,
            ReadmissionStage.NOT_A_DISCHARGE,
            ReadmissionStage.UNKNOWN_ENCOUNTER,
            ReadmissionStage.NO_MODEL,
        )


# -- one discharge --------------------------------------------------------------------------------
class DischargeInput(BaseModel):
    encounter_id: FhirId  # the EHR's Encounter id (ADT: PV1-19)
    source: DischargeSource
    tenant_id: str = "default"
    # False only on a server without careflow's search attributes (the time-skipping test server).
    search_attributes: bool = True


class ReadRequest(BaseModel):
    encounter_id: str
    received_at: datetime  # when the discharge event arrived (an unknown encounter is waited for a while)


class DischargeRecord(BaseModel):
    """What the score is computed from: the features (minimum necessary) and the EHR entries read."""

    encounter_id: str
    patient_id: str
    discharged_at: datetime
    features: DischargeFeatures
    lace: int
    basis: list[str] = Field(default_factory=list)  # FHIR references: the RiskAssessment's basis


class Factor(BaseModel):
    feature: str
    label: str
    value: float | None
    contribution: float  # log-odds added to this patient's score


class ModelScore(BaseModel):
    version: str  # the registry's model version
    probability: float = Field(ge=0.0, le=1.0)
    tier: RiskTier
    factors: list[Factor] = Field(default_factory=list)  # top 3 by contribution


class ScoreRequest(BaseModel):
    record: DischargeRecord
    workflow_id: str


class Scores(BaseModel):
    champion: ModelScore
    challenger: ModelScore | None = None  # shadow: logged, never on the worklist


class WriteRequest(BaseModel):
    workflow_id: str
    source: DischargeSource
    tenant_id: str = "default"
    record: DischargeRecord
    scores: Scores
    narrative: str = ""
    narrative_engine: str = ""  # provider/model of the narrative, "" when none was written


class Written(BaseModel):
    risk_assessment_id: str
    task_id: str | None = None  # the care-coordination Task (high tier only)


class ReadmissionStatus(BaseModel):
    stage: ReadmissionStage = ReadmissionStage.RECEIVED
    source: DischargeSource | None = None
    model_version: str = ""
    probability: float | None = None
    tier: RiskTier | None = None
    risk_assessment_id: str = ""
    task_id: str = ""
    reason: str = ""  # why it ended without a score


# -- training -------------------------------------------------------------------------------------
class TrainingInput(BaseModel):
    discharges: int = Field(50_000, ge=2_000, le=1_000_000)
    seed: int = 7
    # None: champion when there is none yet, challenger otherwise.
    promote_to: ModelAlias | None = None
    approval_timeout_hours: int = Field(24 * 7, ge=1)
    search_attributes: bool = True


class SubgroupFlag(BaseModel):
    attribute: str
    value: str
    n: int
    auroc: float
    overall_auroc: float


class TrainedVersion(BaseModel):
    version: str
    auroc: float
    brier: float
    sensitivity: float | None
    lace_auroc: float
    best_auroc: float
    data_hash: str
    rounds: int
    seconds: float
    flagged: list[SubgroupFlag] = Field(default_factory=list)
    had_champion: bool  # a champion existed when this version was registered


class SubgroupApproval(BaseModel):
    """A reviewer's approval of a version whose flagged subgroups blocked it from champion."""

    reviewer: str = Field(min_length=1, max_length=128)
    note: str = Field(min_length=1, max_length=2000)  # why the gap is acceptable (kept in the registry)


class Promotion(BaseModel):
    version: str
    alias: ModelAlias
    approved_by: str = ""
    note: str = ""


class TrainingStage(StrEnum):
    TRAINING = "training"
    AWAITING_APPROVAL = "awaiting-approval"  # a flagged subgroup blocks champion
    PROMOTED = "promoted"
    NOT_PROMOTED = "not-promoted"  # no reviewer approved within approval_timeout_hours


class TrainingStatus(BaseModel):
    stage: TrainingStage = TrainingStage.TRAINING
    trained: TrainedVersion | None = None
    alias: ModelAlias | None = None
    approval: SubgroupApproval | None = None


# -- nightly --------------------------------------------------------------------------------------
class Window(BaseModel):
    since: datetime
    until: datetime


class Unscored(BaseModel):
    discharged: int  # finished inpatient encounters discharged in the window
    already_scored: int
    encounter_ids: list[str]  # the rest: to score


class QualityRequest(BaseModel):
    window: Window
    discharged: int
    workflow_id: str


class QualityReport(BaseModel):
    champion_version: str
    discharged: int  # finished inpatient encounters in the window
    scored: int  # champion scores of those discharges
    psi: float | None  # None: nothing scored
    psi_threshold: float  # PSI_ALERT, or the bootstrapped threshold of a small night
    shifted: bool


class Outcomes(BaseModel):
    settled: int  # discharges whose 30-day outcome was recorded this run
    readmitted: int


class NightlySummary(BaseModel):
    window: Window
    discharged: int = 0
    already_scored: int = 0
    started: int = 0  # workflows this run started (the others were running already: attached)
    scored: int = 0  # of those started, ended with a score
    not_scored: int = 0  # ended without one (not a discharge, no model) or failed
    quality: QualityReport | None = None
    outcomes: Outcomes | None = None  # 30-day outcomes recorded for discharges a month back
    runs: int = 1  # Temporal runs of this nightly (it continues as new every CHILDREN_PER_RUN children)


class NightlyResume(BaseModel):
    """Carried into the next run when a large night continues as new: its totals and what is left."""

    summary: NightlySummary
    remaining: list[str]


class NightlyInput(BaseModel):
    window_hours: int = Field(24, ge=1, le=24 * 14)
    batch_size: int = Field(50, ge=1, le=500)
    tenant_id: str = "default"
    search_attributes: bool = True
    # Children per Temporal run: a 3,000-discharge backfill in one run is ~21,000 history events
    # (Temporal warns at 10,000); past this many the night continues as new with the rest.
    children_per_run: int = Field(1000, ge=1, le=2000)
    resume: NightlyResume | None = None

"""Models of the note model's promotion saga (seed P9, P5, P17): one `ModelPromotionWorkflow` per
candidate (`model-promotion-<feature>-<candidate>`), `GoldenEvaluationWorkflow`, the golden-query
check every deployment step and the daily Schedule start, and `ModelRollbackWorkflow`
(`model-rollback-<feature>-<version>`), a promoted champion taken back one step."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from careflow.task_queues import GPU

PIPELINE = "model-promotion"  # the CareflowPipeline search attribute's value
WORKFLOW_ID_PREFIX = "model-promotion-"
GOLDEN_ID_PREFIX = "golden-evaluation-"
ROLLBACK_ID_PREFIX = "model-rollback-"
GOLDEN_SCHEDULE_ID = "golden-evaluation-daily"
NOTE_DRAFT = "note_draft"  # the AI feature the note model answers
FEATURES = (NOTE_DRAFT,)  # a deployment may be scoped to a tenant: `note_draft.<tenant>` (its own routing)
# The gateway's other AI features: golden queries too (careflow/observe/golden/), served by the tier map.
GATEWAY_FEATURES = ("rag_answer", "lab_urgency", "readmission_narrative", "pa_justification")
GOLDEN_FEATURES = (*FEATURES, *GATEWAY_FEATURES)  # each has a daily golden-evaluation Schedule

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,47}$")]  # feature and candidate names


def workflow_id(feature: str, candidate: str) -> str:
    """One saga per candidate: starting it twice attaches to the one running."""
    return f"{WORKFLOW_ID_PREFIX}{feature}-{candidate}"


def golden_id(feature: str, key: str) -> str:
    return f"{GOLDEN_ID_PREFIX}{feature}-{key}"


def rollback_id(feature: str, version: str) -> str:
    """One rollback per champion version: asking twice attaches to the first."""
    return f"{ROLLBACK_ID_PREFIX}{feature}-{version}"


class PromotionStage(StrEnum):
    RECEIVED = "received"
    PREPARING = "preparing"  # export -> de-identified, filtered, deduplicated, split examples
    TRAINING = "training"  # LoRA (+ DP-SGD) on careflow-gpu, heartbeating, resumable
    EVALUATING = "evaluating"  # ROUGE-L, SOAP format, memorization, subgroups; the blind pairs
    AWAITING_REVIEW = "awaiting-review"  # blind comparisons by reviewers (`careflow model review`)
    AWAITING_CLEARANCE = "awaiting-clearance"  # a diagnostic intended use: the 510(k) number
    SHADOW = "shadow"  # answers beside the champion, logged, never served
    CANARY = "canary"  # a stable 10 % of requests
    PROMOTED = "promoted"  # champion; the one before stays `previous`
    # Named outcomes: each failed gate undid what the saga had done (registry, routing) and alerted.
    NO_DATA = "no-data"  # too few examples survived preparation
    EVALUATION_FAILED = "evaluation-failed"  # memorization, or worse than the base
    REVIEW_REJECTED = "review-rejected"  # reviewers preferred the base
    REVIEW_EXPIRED = "review-expired"  # the votes did not come in time
    CLEARANCE_MISSING = "clearance-missing"  # diagnostic use without a 510(k) in time
    GOLDEN_REGRESSED = "golden-regressed"  # > 10 % below the baseline on the golden queries
    FLAGGED = "flagged"  # users flagged > 2 % of its answers for 30 minutes in canary
    ROLLED_BACK = "rolled-back"  # an operator rolled it back (`careflow model rollback`)
    PROMOTION_BLOCKED = "promotion-blocked"  # the registry refused (rejected meanwhile, SaMD)

    @property
    def settled(self) -> bool:
        return self not in _RUNNING


_RUNNING = frozenset(
    {
        PromotionStage.RECEIVED,
        PromotionStage.PREPARING,
        PromotionStage.TRAINING,
        PromotionStage.EVALUATING,
        PromotionStage.AWAITING_REVIEW,
        PromotionStage.AWAITING_CLEARANCE,
        PromotionStage.SHADOW,
        PromotionStage.CANARY,
    }
)


class DataSpec(BaseModel):
    """Which export the candidate learns from (the synthetic EHR export here; a real one is a ref)."""

    export_seed: int = 11
    patients: int = Field(150, ge=2, le=20_000)
    canaries: int = Field(3, ge=0, le=20)


class TrainSpec(BaseModel):
    epochs: int = Field(5, ge=1, le=100)
    batch: int = Field(16, ge=1, le=512)
    lr: float = Field(3e-3, gt=0, le=1)
    rank: int = Field(8, ge=1, le=256)
    alpha: int = Field(16, ge=1, le=512)
    target_epsilon: float | None = Field(8.0, gt=0, le=8.0)  # seed: epsilon <= 8; None: no DP
    checkpoint_every: int = Field(20, ge=1)


class PromotionInput(BaseModel):
    feature: Name = NOTE_DRAFT
    candidate: Name  # the saga's name for the version it trains (the registry numbers it)
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    intended_use: str = "documentation"  # diagnostic uses (radiology, triage) need an FDA 510(k)
    min_examples: int = Field(20, ge=1)
    review_pairs: int = Field(50, ge=1, le=500)  # seed: 50 blind comparisons
    review_hours: float = Field(72.0, gt=0)
    clearance_hours: float = Field(24.0 * 30, gt=0)
    shadow_hours: float = Field(24.0 * 7, ge=0)  # seed: one week
    canary_hours: float = Field(24.0, ge=0)
    canary_percent: int = Field(10, ge=1, le=99)
    check_minutes: float = Field(15.0, gt=0)  # how often the canary's flag rate is read
    requested_by: str = "operator"
    model_queue: str = GPU  # where the model work runs (careflow-gpu: GPU workers in production)
    search_attributes: bool = True  # False only on the time-skipping test server


# -- activities' inputs and outputs --------------------------------------------------------------
class PrepareRequest(BaseModel):
    workflow_id: str
    data: DataSpec


class Prepared(BaseModel):
    examples_ref: str  # the PHI store: de-identified examples are still PHI-adjacent
    data_hash: str
    counts: dict[str, int]  # train / validation / test
    report: dict[str, object]


class TrainRequest(BaseModel):
    workflow_id: str
    examples_ref: str
    train: TrainSpec


class Trained(BaseModel):
    adapter_ref: str
    base_model: str
    steps: int
    loss: float
    seconds: float
    epsilon: float | None
    delta: float | None
    privacy: str
    resumed_from: int = 0  # the checkpoint's step a retry continued from (0: started fresh)


class EvaluateRequest(BaseModel):
    workflow_id: str
    examples_ref: str
    adapter_ref: str
    train: TrainSpec
    review_pairs: int


class Evaluated(BaseModel):
    scores: dict[str, float]  # base/candidate ROUGE-L and SOAP format, canaries tested/reproduced
    failures: list[str]  # why the automated gate fails (empty: passes)
    flagged_subgroups: list[str]
    evaluation: dict[str, object]  # the whole evaluation, for the registry
    pairs_ref: str  # the blind pairs in the PHI store (prompt, A, B)
    candidate_is_a: list[bool]  # the hidden order: never shown before the gate is decided


class RegisterRequest(BaseModel):
    workflow_id: str
    feature: str
    candidate: str
    intended_use: str
    train: TrainSpec
    prepared: Prepared
    trained: Trained
    evaluated: Evaluated


class VersionRef(BaseModel):
    version: str  # the registry's version number


class RejectRequest(BaseModel):
    workflow_id: str
    version: str
    reason: str


class TagRequest(BaseModel):
    version: str
    tags: dict[str, str]


class DeploymentAction(StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


class DeployRequest(BaseModel):
    workflow_id: str
    feature: str
    version: str
    action: DeploymentAction
    percent: int = 10
    back_to: str | None = None  # rollback: the champion that answers again
    reason: str = ""


class DeploymentState(BaseModel):
    champion: str | None
    candidate: str | None
    stage: str | None
    percent: int


class FlagRateRequest(BaseModel):
    feature: str
    version: str
    since: datetime


class FlagRateResult(BaseModel):
    responses: int
    flags: int
    rate: float
    breached: bool


class AlertRequest(BaseModel):
    workflow_id: str
    step: str
    feature: str
    version: str
    outcome: str
    reason: str


# -- golden evaluation ---------------------------------------------------------------------------
class GoldenInput(BaseModel):
    feature: Name = NOTE_DRAFT
    version: str | None = None  # None: whatever serves now (champion, and a candidate if any)
    trigger: str = "schedule"  # shadow / canary / promote / schedule / manual
    started_by: str = ""  # the promotion saga's workflow id, when it started this run
    model_queue: str = GPU


class GoldenRequest(BaseModel):
    feature: str
    version: str | None
    key: str  # idempotency: the evaluation's row
    trigger: str


class GoldenResult(BaseModel):
    feature: str
    version: str  # "base" when no fine-tuned version serves
    n: int
    score: float
    baseline: float | None
    drop: float
    regressed: bool
    worst: list[tuple[str, float]] = Field(default_factory=list)


# -- reviewers ------------------------------------------------------------------------------------
class BlindVote(BaseModel):
    reviewer: str = Field(min_length=1, max_length=64)
    pair: int = Field(ge=0)
    prefer: Literal["A", "B", "same"]


class Clearance(BaseModel):
    number: str  # an FDA 510(k) number: K and six digits
    by: str = Field(min_length=1, max_length=64)


class Rollback(BaseModel):
    by: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=3, max_length=500)


class RestoreInput(BaseModel):
    """A promoted champion taken back one step (`careflow model rollback --feature F`)."""

    feature: Name
    version: str  # the champion being rolled back (read when the request was made)
    by: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=3, max_length=500)


class RestoreRequest(RestoreInput):
    workflow_id: str


class RestoreResult(BaseModel):
    feature: str
    version: str
    outcome: Literal["rolled-back", "refused"]
    back_to: str | None = None  # the champion before it (None: the base / the tier route)
    reason: str = ""


class ReviewTally(BaseModel):
    pairs: int = 0
    voted: int = 0  # pairs with at least one vote
    candidate: int = 0  # votes preferring the fine-tuned candidate
    base: int = 0
    same: int = 0


class PromotionStatus(BaseModel):
    stage: PromotionStage = PromotionStage.RECEIVED
    reason: str = ""
    version: str | None = None  # the registry's number for the candidate
    champion_before: str | None = None
    prepared: Prepared | None = None
    trained: Trained | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    failures: list[str] = Field(default_factory=list)
    pairs_ref: str | None = None  # what `careflow model review` shows
    review: ReviewTally = ReviewTally()
    clearance: str | None = None
    golden: list[GoldenResult] = Field(default_factory=list)
    flag_rate: FlagRateResult | None = None
    undone: list[str] = Field(default_factory=list)  # the compensations that ran
    stages: list[tuple[str, datetime]] = Field(default_factory=list)  # when each stage began

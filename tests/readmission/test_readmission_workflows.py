"""The readmission workflows on the time-skipping server, their activities standing in for the EHR, the
registry and the gateway so the workflows' own logic is tested alone (the real activities run in
test_readmission_e2e.py and test_readmission_activities.py).

ReadmissionRiskWorkflow: the high tier gets a narrative citing the model's factors, the others none; a
failed narrative still writes the score; not-a-discharge, unknown-encounter (after the EHR's grace hour)
and no-model end as named outcomes.  ReadmissionTrainingWorkflow: a flagged subgroup holds champion until
a reviewer approves (update; rejected when nothing awaits), or ends not-promoted after the deadline.
ReadmissionNightlyWorkflow: children in batches, a discharge already being scored attaches, the quality
report in the summary."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.llm import DraftInput, DraftOutput
from careflow.llm.tasks import ReadmissionNarrativeInput
from careflow.llm.types import Tier
from careflow.models.readmission import (
    DischargeInput,
    DischargeRecord,
    DischargeSource,
    Factor,
    ModelAlias,
    ModelScore,
    NightlyInput,
    Outcomes,
    Promotion,
    QualityReport,
    QualityRequest,
    ReadmissionStage,
    ReadRequest,
    RiskTier,
    ScoreRequest,
    Scores,
    SubgroupApproval,
    SubgroupFlag,
    TrainedVersion,
    TrainingInput,
    TrainingStage,
    Unscored,
    Window,
    WriteRequest,
    Written,
    workflow_id,
)
from careflow.readmission.features import LABELS, DischargeFeatures, Disposition
from starters.clients.history import export_history
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.readmission import (
    ReadmissionNightlyWorkflow,
    ReadmissionRiskWorkflow,
    ReadmissionTrainingWorkflow,
)

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
RECORD = os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1"

# What the fakes saw, by workflow id.
narratives: dict[str, ReadmissionNarrativeInput] = {}
writes: dict[str, WriteRequest] = {}
promotions: dict[str, Promotion] = {}
quality: dict[str, QualityRequest] = {}
# A discharge whose encounter id starts with "held-" is read only once its event is set.
held: dict[str, asyncio.Event] = {}
# The nightly sweep's answer, by nightly workflow id.
sweeps: dict[str, Unscored] = {}
# Training: flagged subgroups by seed; a seed in `slow` trains until its event is set.
slow: dict[int, asyncio.Event] = {}


def features() -> DischargeFeatures:
    return DischargeFeatures(
        age=81, charlson=4, los_days=9, emergent=True, admissions_12m=3, ed_visits_6m=4,
        disposition=Disposition.SKILLED_NURSING, hemoglobin=9.8, sodium=131, creatinine=2.1,
        active_medications=9,
    )  # fmt: skip


@activity.defn(name="readmission.read_discharge")
async def read_discharge(req: ReadRequest) -> DischargeRecord:
    e = req.encounter_id
    if e.startswith("held-"):
        await held[e].wait()
    if e.startswith("outpatient-"):
        raise ApplicationError("not a finished inpatient stay", type="NotADischarge", non_retryable=True)
    if e.startswith("unknown-"):
        late = activity.info().current_attempt_scheduled_time - req.received_at > timedelta(hours=1)
        raise ApplicationError(f"the EHR has no Encounter {e}", type="EncounterNotFound", non_retryable=late)
    return DischargeRecord(
        encounter_id=e, patient_id="pat-1", discharged_at=req.received_at, features=features(), lace=14,
        basis=[f"Encounter/{e}", "Patient/pat-1"],
    )  # fmt: skip


def model_score(version: str, tier: RiskTier) -> ModelScore:
    p = {RiskTier.HIGH: 0.41, RiskTier.MODERATE: 0.12, RiskTier.LOW: 0.03}[tier]
    return ModelScore(
        version=version,
        probability=p,
        tier=tier,
        factors=[
            Factor(feature=f, label=LABELS[f], value=v, contribution=c)
            for f, v, c in (("admissions_12m", 3, 0.9), ("ed_visits_6m", 4, 0.6), ("charlson", 4, 0.3))
        ],
    )


@activity.defn(name="readmission.score")
async def score(req: ScoreRequest) -> Scores:
    e = req.record.encounter_id
    if "nomodel" in e:
        raise ApplicationError("no model version is champion yet", type="NoChampion", non_retryable=True)
    tier = RiskTier.HIGH if "high" in e else RiskTier.LOW
    return Scores(champion=model_score("3", tier), challenger=model_score("4", RiskTier.MODERATE))


@activity.defn(name="llm.draft")
async def draft(inp: DraftInput) -> DraftOutput:
    wid = activity.info().workflow_id
    typed = inp.typed_input()
    assert isinstance(typed, ReadmissionNarrativeInput)
    narratives[wid] = typed
    if "nollm" in wid:
        raise ApplicationError("the provider refused", type="ProviderRejected", non_retryable=True)
    cited = " ".join(f"{f.name} [{f.evidence_id}]" for f in typed.factors)
    return DraftOutput(
        task=inp.task, output={"narrative": f"High risk because of {cited}."}, request_id=inp.request_id,
        provider="offline", model="test", requested_tier=inp.tier, tier=Tier.STANDARD,
    )  # fmt: skip


@activity.defn(name="readmission.write")
async def write(req: WriteRequest) -> Written:
    writes[req.workflow_id] = req
    high = req.scores.champion.tier is RiskTier.HIGH
    return Written(risk_assessment_id=f"ra-{req.record.encounter_id}", task_id="task-1" if high else None)


@activity.defn(name="readmission.unscored")
async def unscored(window: Window) -> Unscored:
    return sweeps[activity.info().workflow_id]


@activity.defn(name="readmission.quality_check")
async def quality_check(req: QualityRequest) -> QualityReport:
    quality[req.workflow_id] = req
    return QualityReport(
        champion_version="3", discharged=req.discharged, scored=req.discharged, psi=0.31,
        psi_threshold=0.2, shifted=True,
    )  # fmt: skip


@activity.defn(name="readmission.settle_outcomes")
async def settle_outcomes(until: datetime) -> Outcomes:
    return Outcomes(settled=2, readmitted=1)


@activity.defn(name="readmission.train")
async def train(inp: TrainingInput) -> TrainedVersion:
    if inp.seed in slow:
        await slow[inp.seed].wait()
    flagged = (
        [SubgroupFlag(attribute="payer", value="self-pay", n=180, auroc=0.74, overall_auroc=0.85)]
        if inp.seed % 2
        else []
    )
    return TrainedVersion(
        version=str(inp.seed), auroc=0.85, brier=0.08, sensitivity=0.61, lace_auroc=0.69, best_auroc=0.86,
        data_hash="sha256:test", rounds=200, seconds=0.5, flagged=flagged, had_champion=False,
    )  # fmt: skip


@activity.defn(name="readmission.promote")
async def promote(p: Promotion) -> str:
    promotions[p.version] = p
    return p.alias.value


FAKES = [read_discharge, score, write, unscored, quality_check, settle_outcomes, train, promote]


@pytest.fixture
async def env(time_skipping: WorkflowEnvironment, task_queue: str) -> AsyncIterator[WorkflowEnvironment]:
    async with Worker(
        time_skipping.client,
        task_queue=task_queue,
        workflows=[ReadmissionRiskWorkflow, ReadmissionNightlyWorkflow, ReadmissionTrainingWorkflow],
        activities=[draft, *FAKES],
        workflow_runner=sandbox_runner(),
    ):
        yield time_skipping


def encounter(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


async def discharge(env: WorkflowEnvironment, task_queue: str, encounter_id: str) -> WorkflowHandle:
    return await env.client.start_workflow(
        ReadmissionRiskWorkflow.run,
        DischargeInput(encounter_id=encounter_id, source=DischargeSource.ADT, search_attributes=False),
        id=workflow_id(encounter_id),
        task_queue=task_queue,
    )


async def record(env: WorkflowEnvironment, handle: WorkflowHandle, name: str) -> None:
    if RECORD:
        written = await export_history(env.client, handle.id, HISTORIES)
        written.replace(HISTORIES / f"{name}.json")


async def test_high_tier_gets_a_narrative_citing_the_models_factors(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await discharge(env, task_queue, encounter("high"))
    status = await handle.result()
    assert status.stage is ReadmissionStage.SCORED and status.tier is RiskTier.HIGH
    assert (status.model_version, status.probability) == ("3", 0.41)
    assert status.task_id == "task-1" and status.risk_assessment_id.startswith("ra-high-")
    asked = narratives[handle.id]
    assert [f.evidence_id for f in asked.factors] == ["factor:1", "factor:2", "factor:3"]
    assert asked.factors[0].name == "admissions in the prior 12 months" and asked.factors[0].value == "3"
    written = writes[handle.id]
    assert written.narrative.startswith("High risk because of admissions in the prior 12 months [factor:1]")
    assert written.narrative_engine == "offline/test"
    assert written.scores.challenger is not None and written.scores.challenger.version == "4"
    await record(env, handle, "ReadmissionRiskWorkflow-high-tier")


async def test_low_tier_is_written_without_a_narrative(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await discharge(env, task_queue, encounter("low"))
    status = await handle.result()
    assert status.stage is ReadmissionStage.SCORED and status.tier is RiskTier.LOW and status.task_id == ""
    assert handle.id not in narratives
    assert writes[handle.id].narrative == "" and writes[handle.id].narrative_engine == ""
    await record(env, handle, "ReadmissionRiskWorkflow-low-tier")


async def test_a_failed_narrative_still_writes_the_score(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await discharge(env, task_queue, encounter("high-nollm"))
    status = await handle.result()
    assert handle.id in narratives  # it was asked
    assert status.stage is ReadmissionStage.SCORED and status.task_id == "task-1"
    assert writes[handle.id].narrative == "" and writes[handle.id].scores.champion.tier is RiskTier.HIGH


@pytest.mark.parametrize(
    ("kind", "stage", "reason"),
    [
        ("outpatient", ReadmissionStage.NOT_A_DISCHARGE, "not a finished inpatient stay"),
        ("unknown", ReadmissionStage.UNKNOWN_ENCOUNTER, "the EHR has no Encounter unknown-"),
        ("nomodel", ReadmissionStage.NO_MODEL, "no model version is champion yet"),
    ],
)
async def test_what_cannot_be_scored_ends_as_a_named_outcome(
    env: WorkflowEnvironment, task_queue: str, kind: str, stage: ReadmissionStage, reason: str
) -> None:
    t0 = await env.get_current_time()
    handle = await discharge(env, task_queue, encounter(kind))
    status = await handle.result()
    assert status.stage is stage and status.reason.startswith(reason)
    assert handle.id not in writes and status.probability is None
    if kind == "unknown":  # the EHR was given its grace hour to learn of the encounter
        assert await env.get_current_time() - t0 >= timedelta(hours=1)
    await record(env, handle, f"ReadmissionRiskWorkflow-{stage.value}")


async def training(env: WorkflowEnvironment, task_queue: str, seed: int, hours: int = 24) -> WorkflowHandle:
    return await env.client.start_workflow(
        ReadmissionTrainingWorkflow.run,
        TrainingInput(seed=seed, approval_timeout_hours=hours, search_attributes=False),
        id=f"readmission-training-test-{uuid.uuid4().hex[:10]}",
        task_queue=task_queue,
    )


def seed(flagged: bool) -> int:
    n = uuid.uuid4().int % 1_000_000 * 2
    return n + 1 if flagged else n


async def stage(handle: WorkflowHandle) -> TrainingStage:
    return (await handle.query(ReadmissionTrainingWorkflow.status)).stage


async def test_a_flagged_subgroup_waits_for_a_reviewer_before_champion(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    s = seed(flagged=True)
    slow[s] = asyncio.Event()
    handle = await training(env, task_queue, s)
    approval = SubgroupApproval(reviewer="dr-quality", note="self-pay n=180: gap within its interval")
    # still training: nothing to approve, and the validator says so
    with pytest.raises(WorkflowUpdateFailedError) as early:
        await handle.execute_update(ReadmissionTrainingWorkflow.approve_subgroups, approval)
    assert "nothing awaits approval: the training is training" in str(early.value.cause)
    slow[s].set()
    await wait_until(lambda: _at(handle, TrainingStage.AWAITING_APPROVAL), what="awaiting approval")
    assert str(s) not in promotions  # blocked until the reviewer answers
    after = await handle.execute_update(ReadmissionTrainingWorkflow.approve_subgroups, approval)
    assert after.approval == approval
    status = await handle.result()
    assert status.stage is TrainingStage.PROMOTED and status.alias is ModelAlias.CHAMPION
    assert promotions[str(s)] == Promotion(
        version=str(s), alias=ModelAlias.CHAMPION, approved_by="dr-quality", note=approval.note
    )
    assert [f.value for f in status.trained.flagged] == ["self-pay"]
    await record(env, handle, "ReadmissionTrainingWorkflow-flagged-approved")


async def _at(handle: WorkflowHandle, want: TrainingStage) -> bool:
    return await stage(handle) is want


async def test_unapproved_flagged_version_is_not_promoted_after_the_deadline(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    s = seed(flagged=True)
    t0 = await env.get_current_time()
    handle = await training(env, task_queue, s, hours=48)
    status = await handle.result()
    assert status.stage is TrainingStage.NOT_PROMOTED and status.alias is None
    assert str(s) not in promotions
    assert await env.get_current_time() - t0 >= timedelta(hours=48)
    await record(env, handle, "ReadmissionTrainingWorkflow-not-promoted")


async def test_an_unflagged_version_is_promoted_and_approval_is_refused(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await training(env, task_queue, seed(flagged=False))
    status = await handle.result()
    assert status.stage is TrainingStage.PROMOTED and status.alias is ModelAlias.CHAMPION
    assert promotions[status.trained.version].approved_by == ""
    await record(env, handle, "ReadmissionTrainingWorkflow-promoted")


async def test_nightly_scores_in_batches_attaches_to_running_ones_and_reports_quality(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    busy = encounter("held-high")
    held[busy] = asyncio.Event()
    running = await discharge(env, task_queue, busy)  # its ADT came in: being scored right now
    fresh = [encounter("high"), encounter("low"), encounter("low"), encounter("outpatient"), encounter("low")]
    nightly_id = f"readmission-nightly-test-{uuid.uuid4().hex[:8]}"
    sweeps[nightly_id] = Unscored(discharged=8, already_scored=2, encounter_ids=[busy, *fresh])
    handle = await env.client.start_workflow(
        ReadmissionNightlyWorkflow.run,
        NightlyInput(batch_size=2, search_attributes=False),
        id=nightly_id,
        task_queue=task_queue,
    )
    summary = await handle.result()
    assert (summary.discharged, summary.already_scored) == (8, 2)
    assert summary.started == len(fresh)  # the running one attached, not started twice
    assert (summary.scored, summary.not_scored) == (4, 1)  # the outpatient encounter is not a discharge
    for e in fresh:
        child = await env.client.get_workflow_handle_for(ReadmissionRiskWorkflow.run, workflow_id(e)).result()
        assert child.source is DischargeSource.NIGHTLY
    assert summary.quality is not None and summary.quality.shifted and summary.quality.psi == 0.31
    checked = quality[nightly_id]
    assert checked.window.until - checked.window.since == timedelta(hours=24)
    assert abs(checked.window.until - await env.get_current_time()) < timedelta(minutes=5)
    assert summary.outcomes == Outcomes(settled=2, readmitted=1)
    assert await handle.query(ReadmissionNightlyWorkflow.summary) == summary
    held[busy].set()
    assert (await running.result()).source is DischargeSource.ADT
    await record(env, handle, "ReadmissionNightlyWorkflow-batches")


def test_the_fakes_speak_the_real_activities_names() -> None:
    from activities.readmission import ReadmissionActivities

    real = {
        activity._Definition.must_from_callable(a).name
        for a in ReadmissionActivities.__new__(ReadmissionActivities).all()
    }
    assert {activity._Definition.must_from_callable(f).name for f in FAKES} == real


async def test_a_large_night_continues_as_new_and_sums_its_runs(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fresh = [encounter("low") for _ in range(5)]
    nightly_id = f"readmission-nightly-test-{uuid.uuid4().hex[:8]}"
    sweeps[nightly_id] = Unscored(discharged=5, already_scored=0, encounter_ids=fresh)
    handle = await env.client.start_workflow(
        ReadmissionNightlyWorkflow.run,
        NightlyInput(batch_size=1, children_per_run=2, search_attributes=False),
        id=nightly_id,
        task_queue=task_queue,
    )
    summary = await handle.result()  # follows the continued runs to the last
    assert summary.runs == 3 and (summary.started, summary.scored, summary.discharged) == (5, 5, 5)
    assert summary.quality is not None and summary.outcomes is not None  # once, by the last run
    first = await env.client.get_workflow_handle(nightly_id, run_id=handle.first_execution_run_id).describe()
    assert first.status is WorkflowExecutionStatus.CONTINUED_AS_NEW
    await record(env, handle, "ReadmissionNightlyWorkflow-continued")

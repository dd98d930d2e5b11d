"""ModelPromotionWorkflow on the time-skipping server, its activities standing in for the model work,
the registry and the routing, so the saga's own logic is tested alone (the real activities run in
test_promotion_e2e.py).

The whole way to champion (blind votes, a week of shadow, a day of canary with the flag rate read
every 15 minutes), and every failing gate compensating what was done before it: memorization, the
review deadline, reviewers preferring the base, a diagnostic use without a 510(k), a golden regression
in canary, users' flags, a registry that refuses, and an operator's rollback."""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from careflow.models.model_promotion import (
    AlertRequest,
    BlindVote,
    Clearance,
    DeploymentState,
    DeployRequest,
    Evaluated,
    EvaluateRequest,
    FlagRateRequest,
    FlagRateResult,
    GoldenInput,
    GoldenRequest,
    GoldenResult,
    Prepared,
    PrepareRequest,
    PromotionInput,
    PromotionStage,
    PromotionStatus,
    RegisterRequest,
    RejectRequest,
    RestoreInput,
    RestoreRequest,
    RestoreResult,
    Rollback,
    TagRequest,
    Trained,
    TrainRequest,
    VersionRef,
    golden_id,
    rollback_id,
    workflow_id,
)
from starters.clients.history import export_history
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.golden_evaluation import GoldenEvaluationWorkflow
from workflows.model_promotion import ModelPromotionWorkflow
from workflows.model_rollback import ModelRollbackWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
RECORD = os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1"
PAIRS = 4
ORDER = [True, False, True, False]  # the hidden order the stand-in evaluation drew

# What the stand-ins saw, by the candidate's name (the part of the workflow id after the feature).
seen: dict[str, list[str]] = defaultdict(list)
flag_reads: dict[str, list[FlagRateRequest]] = defaultdict(list)


def _name(wid: str) -> str:
    return (
        wid.split("note_draft-", 1)[-1].rsplit("-", 1)[0]
        if wid.startswith("golden")
        else wid.split("note_draft-", 1)[-1]
    )


def _wid() -> str:
    return activity.info().workflow_id or ""


@activity.defn(name="model.prepare")
async def prepare(req: PrepareRequest) -> Prepared:
    seen[_name(req.workflow_id)].append(f"prepare@{activity.info().task_queue.rsplit('-', 1)[-1]}")
    train = 3 if _name(req.workflow_id).startswith("tiny") else 400
    return Prepared(
        examples_ref="finetune-data/" + "a" * 64,
        data_hash="h" * 64,
        counts={"train": train, "validation": 20, "test": 20},
        report={},
    )


@activity.defn(name="model.train")
async def train(req: TrainRequest) -> Trained:
    seen[_name(req.workflow_id)].append("train")
    return Trained(
        adapter_ref="note-adapter/" + "b" * 64,
        base_model="note-base",
        steps=150,
        loss=1.2,
        seconds=88.0,
        epsilon=7.99,
        delta=2e-4,
        privacy="dp-sgd (opacus, rdp)",
    )


@activity.defn(name="model.evaluate")
async def evaluate(req: EvaluateRequest) -> Evaluated:
    seen[_name(req.workflow_id)].append("evaluate")
    failures = (
        ["memorization: 1 of 3 canaries reproduced"] if _name(req.workflow_id).startswith("leaky") else []
    )
    return Evaluated(
        scores={"rouge_l": 0.41, "rouge_l_base": 0.07},
        failures=failures,
        flagged_subgroups=[],
        evaluation={},
        pairs_ref="blind-review/" + "c" * 64,
        candidate_is_a=ORDER[: req.review_pairs],
    )


@activity.defn(name="model.register")
async def register(req: RegisterRequest) -> VersionRef:
    seen[req.candidate].append(f"register:{req.trained.epsilon}")
    return VersionRef(version="7")


@activity.defn(name="model.reject")
async def reject(req: RejectRequest) -> None:
    seen[_name(req.workflow_id)].append(f"reject:{req.version}:{req.reason.split(':')[0]}")


@activity.defn(name="model.tag")
async def tag(req: TagRequest) -> None:
    seen[_name(_wid())].append("tag:" + ",".join(f"{k}={v}" for k, v in sorted(req.tags.items())))


@activity.defn(name="model.deploy")
async def deploy(req: DeployRequest) -> DeploymentState:
    name = _name(req.workflow_id)
    seen[name].append(
        f"deploy:{req.action.value}" + (f":{req.back_to}" if req.action.value == "rollback" else "")
    )
    if req.action.value == "promote" and name.startswith("blocked"):
        raise ApplicationError(
            "version 7 cannot be promoted: rejected: by hand", type="PromotionBlocked", non_retryable=True
        )
    return DeploymentState(champion="6", candidate=req.version, stage=req.action.value, percent=req.percent)


@activity.defn(name="model.golden")
async def golden(req: GoldenRequest) -> GoldenResult:
    name = _name(_wid())
    seen[name].append(f"golden:{req.trigger}")
    bad = name.startswith(f"regresses-{req.trigger}")
    score = 0.60 if bad else 0.80
    return GoldenResult(
        feature=req.feature,
        version=req.version or "6",
        n=60,
        score=score,
        baseline=0.78,
        drop=max(0.0, (0.78 - score) / 0.78),
        regressed=bad,
    )


@activity.defn(name="model.restore")
async def restore(req: RestoreRequest) -> RestoreResult:
    seen[_name(req.workflow_id)].append(f"restore:{req.version}:{req.by}")
    if req.version.startswith("never"):
        raise ApplicationError(
            f"version {req.version} was never promoted for {req.feature}",
            type="RollbackRefused",
            non_retryable=True,
        )
    return RestoreResult(feature=req.feature, version=req.version, outcome="rolled-back", back_to="6")


@activity.defn(name="model.flag_rate")
async def flag_rate(req: FlagRateRequest) -> FlagRateResult:
    name = _name(_wid())
    flag_reads[name].append(req)
    breached = name.startswith("flagged") and len(flag_reads[name]) >= 4
    return FlagRateResult(
        responses=200, flags=9 if breached else 1, rate=0.045 if breached else 0.005, breached=breached
    )


@activity.defn(name="model.alert")
async def alert(req: AlertRequest) -> None:
    seen[_name(req.workflow_id)].append(f"alert:{req.outcome}")


@pytest.fixture
async def env(time_skipping: WorkflowEnvironment, task_queue: str) -> AsyncIterator[WorkflowEnvironment]:
    c = time_skipping.client
    async with (
        Worker(
            c,
            task_queue=task_queue,
            workflows=[ModelPromotionWorkflow, GoldenEvaluationWorkflow, ModelRollbackWorkflow],
            activities=[register, reject, tag, deploy, restore, flag_rate, alert],
            workflow_runner=sandbox_runner(),
        ),
        Worker(c, task_queue=f"{task_queue}-gpu", activities=[prepare, train, evaluate, golden]),
    ):
        yield time_skipping


async def start(env: WorkflowEnvironment, task_queue: str, name: str, **extra: object) -> WorkflowHandle:
    candidate = f"{name}-{uuid.uuid4().hex[:8]}"
    inp = PromotionInput(
        candidate=candidate,
        review_pairs=PAIRS,
        search_attributes=False,
        model_queue=f"{task_queue}-gpu",
        **extra,
    )  # type: ignore[arg-type]
    return await env.client.start_workflow(
        ModelPromotionWorkflow.run, inp, id=workflow_id(inp.feature, candidate), task_queue=task_queue
    )


async def at(handle: WorkflowHandle, stage: PromotionStage) -> PromotionStatus:
    async def now() -> PromotionStatus | None:
        st: PromotionStatus = await handle.query(ModelPromotionWorkflow.status)
        return st if st.stage is stage else None

    return await wait_until(now, what=f"{handle.id} at {stage.value}")


async def vote_all(handle: WorkflowHandle, for_candidate: bool) -> None:
    for pair, candidate_is_a in enumerate(ORDER):
        side = "A" if candidate_is_a == for_candidate else "B"
        await handle.execute_update(
            ModelPromotionWorkflow.review, BlindVote(reviewer="dr-informatics", pair=pair, prefer=side)
        )


async def record(env: WorkflowEnvironment, handle: WorkflowHandle | str, name: str) -> None:
    if RECORD:
        wid = handle if isinstance(handle, str) else handle.id
        written = await export_history(env.client, wid, HISTORIES)
        written.replace(HISTORIES / f"{name}.json")


def name_of(handle: WorkflowHandle) -> str:
    return handle.id.split("note_draft-", 1)[1]


async def test_a_candidate_goes_through_review_a_week_of_shadow_and_a_day_of_canary_to_champion(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    t0 = await env.get_current_time()
    handle = await start(env, task_queue, "good")
    st = await at(handle, PromotionStage.AWAITING_REVIEW)
    assert st.version == "7" and st.review.pairs == PAIRS and st.review.voted == 0
    # the votes so far never say which side is the candidate: the order stays hidden
    first = await handle.execute_update(
        ModelPromotionWorkflow.review, BlindVote(reviewer="dr-a", pair=0, prefer="A")
    )
    assert (first.voted, first.candidate, first.base) == (1, 0, 0)
    await vote_all(handle, for_candidate=True)
    done: PromotionStatus = await handle.result()
    assert done.stage is PromotionStage.PROMOTED, done.reason
    name = name_of(handle)
    assert seen[name][:4] == ["prepare@gpu", "train", "evaluate", "register:7.99"]
    assert [s for s in seen[name] if s.startswith(("deploy", "golden", "reject", "alert"))] == [
        "deploy:shadow",
        "golden:shadow",
        "deploy:canary",
        "golden:canary",
        "deploy:promote",
        "golden:promote",
    ]
    assert (
        "tag:approved_by=dr-a,dr-informatics,blind_review=4 pairs; votes: candidate 5, base 0, same 0"
        in seen[name]
    )
    assert done.review.candidate == 5 and done.champion_before == "6" and not done.undone
    # a week of shadow, then a day of canary read every 15 minutes
    stages = dict(done.stages)
    assert stages["canary"] - stages["shadow"] >= timedelta(days=7)
    assert stages["promoted"] - stages["canary"] >= timedelta(hours=24)
    assert len(flag_reads[name]) == 24 * 4
    assert all(r.since <= t0 + timedelta(days=9) for r in flag_reads[name])
    await record(env, handle, "ModelPromotionWorkflow-promoted")
    await record(env, golden_id("note_draft", f"{name}-canary"), "GoldenEvaluationWorkflow-canary")


async def test_memorization_fails_the_automated_gate_and_rejects_the_version(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "leaky")
    done: PromotionStatus = await handle.result()
    assert done.stage is PromotionStage.EVALUATION_FAILED and done.reason.startswith("memorization")
    assert seen[name_of(handle)][-2:] == ["reject:7:evaluation-failed", "alert:evaluation-failed"]
    assert not [s for s in seen[name_of(handle)] if s.startswith("deploy")]
    assert done.undone == ["registry: version 7 rejected"]
    await record(env, handle, "ModelPromotionWorkflow-evaluation-failed")


async def test_too_few_examples_end_before_training(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue, "tiny")
    done: PromotionStatus = await handle.result()
    assert done.stage is PromotionStage.NO_DATA and "3 training examples" in done.reason
    assert seen[name_of(handle)] == ["prepare@gpu", "alert:no-data"]


async def test_the_review_deadline_passes_without_every_vote(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    t0 = await env.get_current_time()
    handle = await start(env, task_queue, "unreviewed", review_hours=72)
    await at(handle, PromotionStage.AWAITING_REVIEW)
    await handle.execute_update(
        ModelPromotionWorkflow.review, BlindVote(reviewer="dr-a", pair=1, prefer="same")
    )
    done: PromotionStatus = await handle.result()
    assert done.stage is PromotionStage.REVIEW_EXPIRED and done.reason == "1 of 4 pairs voted on within 72 h"
    assert await env.get_current_time() - t0 >= timedelta(hours=72)
    assert seen[name_of(handle)][-2:] == ["reject:7:review-expired", "alert:review-expired"]
    await record(env, handle, "ModelPromotionWorkflow-review-expired")


async def test_reviewers_preferring_the_base_reject_the_candidate(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "worse")
    await at(handle, PromotionStage.AWAITING_REVIEW)
    with pytest.raises(WorkflowUpdateFailedError) as bad:
        await handle.execute_update(
            ModelPromotionWorkflow.review, BlindVote(reviewer="dr-a", pair=9, prefer="A")
        )
    assert "pair 9 does not exist: pairs are 0-3" in str(bad.value.cause)
    await vote_all(handle, for_candidate=False)
    done: PromotionStatus = await handle.result()
    assert done.stage is PromotionStage.REVIEW_REJECTED and (done.review.base, done.review.candidate) == (
        4,
        0,
    )
    assert not [s for s in seen[name_of(handle)] if s.startswith("deploy")]


async def test_a_diagnostic_use_waits_for_its_510k_and_ends_without_one(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "radiology-missing", intended_use="radiology", clearance_hours=48)
    await at(handle, PromotionStage.AWAITING_REVIEW)
    await vote_all(handle, for_candidate=True)
    done: PromotionStatus = await handle.result()
    assert done.stage is PromotionStage.CLEARANCE_MISSING and "510(k)" in done.reason
    assert not [s for s in seen[name_of(handle)] if s.startswith("deploy")]
    await record(env, handle, "ModelPromotionWorkflow-clearance-missing")


async def test_a_diagnostic_use_with_its_510k_attached_is_deployed(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(
        env, task_queue, "radiology-cleared", intended_use="radiology", shadow_hours=1, canary_hours=1
    )
    await at(handle, PromotionStage.AWAITING_REVIEW)
    await vote_all(handle, for_candidate=True)
    await at(handle, PromotionStage.AWAITING_CLEARANCE)
    with pytest.raises(WorkflowUpdateFailedError) as bad:
        await handle.execute_update(
            ModelPromotionWorkflow.clearance, Clearance(number="510k-123", by="ra-lead")
        )
    assert "is not a 510(k) number" in str(bad.value.cause)
    await handle.execute_update(ModelPromotionWorkflow.clearance, Clearance(number="K213456", by="ra-lead"))
    done: PromotionStatus = await handle.result()
    assert done.stage is PromotionStage.PROMOTED and done.clearance == "K213456"
    assert "tag:fda_clearance=K213456,fda_clearance_by=ra-lead" in seen[name_of(handle)]


@pytest.mark.parametrize("when", ["shadow", "canary"])
async def test_a_golden_regression_routes_the_candidate_out_and_rejects_it(
    env: WorkflowEnvironment, task_queue: str, when: str
) -> None:
    handle = await start(env, task_queue, f"regresses-{when}")
    await at(handle, PromotionStage.AWAITING_REVIEW)
    await vote_all(handle, for_candidate=True)
    done: PromotionStatus = await handle.result()
    assert done.stage is PromotionStage.GOLDEN_REGRESSED
    assert done.reason == f"{when}: golden score 0.600 is 23% below the champion's 0.780 (limit 10 %)"
    tail = seen[name_of(handle)][-4:]
    assert tail == [
        f"golden:{when}",
        "deploy:rollback:6",
        "reject:7:golden-regressed",
        "alert:golden-regressed",
    ]
    assert done.undone == ["routing: note_draft answered by 6 again", "registry: version 7 rejected"]
    if when == "canary":
        await record(env, handle, "ModelPromotionWorkflow-golden-regressed")


async def test_users_flags_above_two_percent_in_canary_roll_it_back(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "flagged")
    await at(handle, PromotionStage.AWAITING_REVIEW)
    await vote_all(handle, for_candidate=True)
    done: PromotionStatus = await handle.result()
    assert done.stage is PromotionStage.FLAGGED and done.reason.startswith("9 of 200 answers flagged (4.5%)")
    assert len(flag_reads[name_of(handle)]) == 4  # found on the fourth 15-minute read: within the hour
    assert seen[name_of(handle)][-3:] == ["deploy:rollback:6", "reject:7:flagged", "alert:flagged"]
    await record(env, handle, "ModelPromotionWorkflow-flagged")


async def test_an_operator_rolls_back_during_shadow(env: WorkflowEnvironment, task_queue: str) -> None:
    handle = await start(env, task_queue, "stopped")
    await at(handle, PromotionStage.AWAITING_REVIEW)
    await vote_all(handle, for_candidate=True)
    await at(handle, PromotionStage.SHADOW)
    st = await handle.execute_update(
        ModelPromotionWorkflow.rollback, Rollback(by="ml-ops", reason="odd answers")
    )
    assert st.stage is PromotionStage.ROLLED_BACK and st.reason == "odd answers (by ml-ops)"
    assert seen[name_of(handle)][-3:] == ["deploy:rollback:6", "reject:7:rolled-back", "alert:rolled-back"]
    await record(env, handle, "ModelPromotionWorkflow-rolled-back")


async def test_a_registry_that_refuses_the_promotion_leaves_the_champion(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(env, task_queue, "blocked", shadow_hours=0, canary_hours=0)
    await at(handle, PromotionStage.AWAITING_REVIEW)
    await vote_all(handle, for_candidate=True)
    done: PromotionStatus = await handle.result()
    assert done.stage is PromotionStage.PROMOTION_BLOCKED and "rejected: by hand" in done.reason
    assert next(s for s in seen[name_of(handle)] if s.startswith("deploy")) == "deploy:canary"  # no shadow
    assert seen[name_of(handle)][-3:] == [
        "deploy:rollback:6",
        "reject:7:promotion-blocked",
        "alert:promotion-blocked",
    ]


async def test_the_daily_golden_run_alerts_on_a_regression_of_what_serves(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    name = f"regresses-schedule-{uuid.uuid4().hex[:6]}"
    result = await env.client.execute_workflow(
        GoldenEvaluationWorkflow.run,
        GoldenInput(feature="note_draft", trigger="schedule", model_queue=f"{task_queue}-gpu"),
        id=golden_id("note_draft", f"{name}-daily"),
        task_queue=task_queue,
    )
    assert result.regressed and result.score == 0.60
    assert seen[name] == ["golden:schedule", "alert:golden-regressed"]
    await record(env, golden_id("note_draft", f"{name}-daily"), "GoldenEvaluationWorkflow-schedule-regressed")


async def test_a_promoted_champion_goes_back_one_step_and_a_refused_rollback_is_a_named_outcome(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    version = f"7{uuid.uuid4().hex[:6]}"
    wid = rollback_id("note_draft", version)
    inp = RestoreInput(feature="note_draft", version=version, by="dr-ops", reason="flags after promotion")
    done = await env.client.execute_workflow(ModelRollbackWorkflow.run, inp, id=wid, task_queue=task_queue)
    assert (done.outcome, done.back_to) == ("rolled-back", "6")
    assert seen[version] == [f"restore:{version}:dr-ops", "alert:rolled-back"]
    await record(env, wid, "ModelRollbackWorkflow-rolled-back")

    never = f"never-{uuid.uuid4().hex[:6]}"
    refused = await env.client.execute_workflow(
        ModelRollbackWorkflow.run,
        inp.model_copy(update={"version": never}),
        id=rollback_id("note_draft", never),
        task_queue=task_queue,
    )
    assert (
        refused.outcome == "refused"
        and refused.reason == f"version {never} was never promoted for note_draft"
    )
    assert seen[never] == [f"restore:{never}:dr-ops"]  # nothing changed, nobody alerted
    await record(env, rollback_id("note_draft", never), "ModelRollbackWorkflow-refused")

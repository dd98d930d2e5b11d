"""Starting and steering the note model's promotion saga, the golden-query check and the rollback of a
promoted champion: shared by the CLI, the demo, the bench and the tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)

from careflow import task_queues
from careflow.config import Settings
from careflow.finetune import blind, deployment
from careflow.models.model_promotion import (
    GOLDEN_ID_PREFIX,
    GOLDEN_SCHEDULE_ID,
    PIPELINE,
    BlindVote,
    Clearance,
    GoldenInput,
    GoldenResult,
    PromotionInput,
    PromotionStage,
    PromotionStatus,
    RestoreInput,
    RestoreResult,
    ReviewTally,
    Rollback,
    golden_id,
    rollback_id,
    workflow_id,
)
from careflow.phi_store import PhiStore
from starters.clients.keyed_start import Started, start_keyed
from starters.clients.schedules import put_schedule
from starters.clients.updates import execute_audited
from workflows import search_attributes as sa
from workflows.golden_evaluation import GoldenEvaluationWorkflow
from workflows.model_promotion import ModelPromotionWorkflow
from workflows.model_rollback import ModelRollbackWorkflow

GOLDEN_CRON = "30 3 * * *"  # daily, 03:30 UTC (seed P5: "on schedule, daily minimum")


def candidate_name(now: datetime | None = None) -> str:
    """A new candidate's default name: the date and a short random suffix (`2026-12-06-3fa2`)."""
    return f"{(now or datetime.now(UTC)).date().isoformat()}-{uuid.uuid4().hex[:4]}"


async def start(client: Client, inp: PromotionInput, task_queue: str = task_queues.MAIN) -> Started:
    """One saga per candidate: starting the same candidate again attaches to it."""
    wid = workflow_id(inp.feature, inp.candidate)
    started = await start_keyed(
        client,
        ModelPromotionWorkflow.run,
        inp,
        id=wid,
        task_queue=task_queue,
        search_attributes=sa.at_start(PIPELINE, PromotionStage.RECEIVED.value, "default")
        if inp.search_attributes
        else None,
    )
    return Started(wid, started)


async def status(client: Client, wid: str) -> PromotionStatus:
    result: PromotionStatus = await client.get_workflow_handle(wid).query(ModelPromotionWorkflow.status)
    return result


def pairs(settings: Settings, st: PromotionStatus) -> list[blind.Pair]:
    """The blind pairs a reviewer sees (prompt, A, B), read from the PHI store on this machine."""
    if not st.pairs_ref:
        return []
    return blind.from_json(PhiStore.of(settings).read(st.pairs_ref))


async def _audited(
    client: Client, wid: str, update: Any, arg: Any, pool: asyncpg.Pool, actor: str, action: str
) -> Any:
    return await execute_audited(
        client,
        wid,
        update,
        arg,
        audit_pool=pool,
        actor=actor,
        action=action,
        resource_type="Model",
        what="model promotion",
    )


async def vote(client: Client, wid: str, v: BlindVote, audit_pool: asyncpg.Pool) -> ReviewTally:
    tally: ReviewTally = await _audited(
        client, wid, ModelPromotionWorkflow.review, v, audit_pool, v.reviewer, "blind-review"
    )
    return tally


async def clearance(client: Client, wid: str, c: Clearance, audit_pool: asyncpg.Pool) -> PromotionStatus:
    st: PromotionStatus = await _audited(
        client, wid, ModelPromotionWorkflow.clearance, c, audit_pool, c.by, "fda-clearance"
    )
    return st


async def rollback(client: Client, wid: str, r: Rollback, audit_pool: asyncpg.Pool) -> PromotionStatus:
    st: PromotionStatus = await _audited(
        client, wid, ModelPromotionWorkflow.rollback, r, audit_pool, r.by, "rollback"
    )
    return st


async def restore(
    client: Client, pool: asyncpg.Pool, feature: str, by: str, reason: str, task_queue: str = task_queues.MAIN
) -> RestoreResult:
    """Take the feature's promoted champion back one step (ModelRollbackWorkflow); asking again while it
    runs attaches to it, asking after it ended starts a new run (refused: no longer serves)."""
    d = await deployment.current(pool, feature)
    if d.champion is None:
        return RestoreResult(
            feature=feature, version="", outcome="refused", reason=f"no promoted model serves {feature}"
        )
    inp = RestoreInput(feature=feature, version=d.champion, by=by, reason=reason)
    wid = rollback_id(feature, d.champion)
    await start_keyed(
        client, ModelRollbackWorkflow.run, inp, id=wid, task_queue=task_queue, again_after_close=True
    )
    result: RestoreResult = await client.get_workflow_handle_for(ModelRollbackWorkflow.run, wid).result()
    return result


async def golden_now(client: Client, feature: str, version: str | None = None) -> GoldenResult:
    """One golden-query run now (`careflow model golden`), against the champion's baseline."""
    wid = golden_id(feature, f"manual-{uuid.uuid4().hex[:8]}")
    result: GoldenResult = await client.execute_workflow(
        GoldenEvaluationWorkflow.run,
        GoldenInput(feature=feature, version=version, trigger="manual"),
        id=wid,
        task_queue=task_queues.MAIN,
    )
    return result


def golden_schedule(feature: str, cron: str = GOLDEN_CRON, task_queue: str = task_queues.MAIN) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            GoldenEvaluationWorkflow.run,
            GoldenInput(feature=feature, trigger="schedule"),
            id=f"{GOLDEN_ID_PREFIX}{feature}-daily",  # the Schedule appends the scheduled time
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note=f"careflow golden queries of {feature}: a regression alerts (seed P5)"),
    )


async def ensure_golden_schedule(client: Client, feature: str, cron: str = GOLDEN_CRON) -> bool:
    return await put_schedule(client, f"{GOLDEN_SCHEDULE_ID}-{feature}", golden_schedule(feature, cron))

"""ModelPromotionWorkflow with its real activities on the dev server: the synthetic export, de-identified
and split, LoRA on a toy base, the evaluation and the blind pairs in the PHI store, MLflow, the
deployment row, the golden queries, the flag rate from llm_calls and llm_feedback, alerts.

Each test routes a feature of its own (`note_draft.<suffix>`, a tenant-scoped deployment) and registers
under a model name of its own, so the session's other tests never see its versions."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.worker import Worker

from activities.model_promotion import ModelActivities, PromotionActivities
from careflow import task_queues
from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.finetune import deployment
from careflow.finetune.registry import NoteModelRegistry
from careflow.finetune.serving import served_model
from careflow.llm.gateway import Gateway
from careflow.models.model_promotion import (
    BlindVote,
    DataSpec,
    PromotionInput,
    PromotionStage,
    PromotionStatus,
    RestoreInput,
    Rollback,
    TrainSpec,
    rollback_id,
)
from careflow.notify.notifier import Notifier
from careflow.observe import runs
from careflow.phi_store import PhiStore
from starters.cli.common import last_heartbeat
from starters.clients import model_promotion as client_of
from starters.clients.updates import ReviewRefused
from tests.support.processes import start_ready
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.golden_evaluation import GoldenEvaluationWorkflow
from workflows.model_promotion import ModelPromotionWorkflow
from workflows.model_rollback import ModelRollbackWorkflow

# Measured on the toy base: 73 training notes, 8 epochs without DP reach ROUGE-L 0.29 (base 0.15); with
# DP at epsilon 8 the noise drowns so few examples (0.04) and the gate fails, as it should.
SMALL = TrainSpec(epochs=8, batch=4, lr=1e-2, rank=8, alpha=16, target_epsilon=None, checkpoint_every=10)
DATA = DataSpec(export_seed=5, patients=24, canaries=1)


@dataclass
class Saga:
    client: Client
    settings: Settings
    pool: asyncpg.Pool
    registry: NoteModelRegistry
    feature: str
    gpu_queue: str
    task_queue: str

    def input(self, candidate: str, **extra: object) -> PromotionInput:
        fields: dict[str, object] = {
            "feature": self.feature,
            "candidate": candidate,
            "data": DATA,
            "train": SMALL,
            "min_examples": 5,
            "review_pairs": 3,
            "shadow_hours": 2 / 3600,
            "canary_hours": 4 / 3600,
            "check_minutes": 1 / 60,
            "model_queue": self.gpu_queue,
            **extra,
        }
        return PromotionInput.model_validate(fields)

    async def at(self, wid: str, *stages: PromotionStage, timeout: float = 240) -> PromotionStatus:
        async def now() -> PromotionStatus | None:
            st = await client_of.status(self.client, wid)
            return st if st.stage in stages or st.stage.settled else None

        return await wait_until(now, timeout=timeout, what=f"{wid} at {[s.value for s in stages]}")


@pytest_asyncio.fixture
async def saga(
    client: Client, settings: Settings, task_queue: str, note_base: Path, tmp_path: Path
) -> AsyncIterator[Saga]:
    s = settings.model_copy(update={"finetune_base_model": note_base})
    pool = await create_pool(s)
    registry = NoteModelRegistry(
        s.registry_store_url, tmp_path / "mlflow", name=f"note-e2e-{uuid.uuid4().hex[:8]}"
    )
    model = ModelActivities(s, pool, PhiStore.of(s), lambda: registry, lambda: Gateway.from_settings(pool, s))
    promo = PromotionActivities(pool, Notifier(pool, None), lambda: registry)
    gpu = f"{task_queue}-gpu"
    try:
        async with (
            Worker(
                client,
                task_queue=task_queue,
                workflows=[ModelPromotionWorkflow, GoldenEvaluationWorkflow, ModelRollbackWorkflow],
                activities=promo.all(),
                workflow_runner=sandbox_runner(),
            ),
            Worker(client, task_queue=gpu, activities=model.all(), max_concurrent_activities=1),
        ):
            yield Saga(client, s, pool, registry, f"note_draft.e2e{uuid.uuid4().hex[:6]}", gpu, task_queue)
    finally:
        await pool.close()


async def test_a_candidate_is_trained_reviewed_deployed_and_becomes_champion(saga: Saga) -> None:
    started = await client_of.start(saga.client, saga.input("first"), task_queue=saga.task_queue)
    wid = started.workflow_id
    assert wid == f"model-promotion-{saga.feature}-first" and started.started
    again = await client_of.start(saga.client, saga.input("first"), task_queue=saga.task_queue)
    assert not again.started  # the same candidate attaches

    st = await saga.at(wid, PromotionStage.AWAITING_REVIEW)
    assert st.stage is PromotionStage.AWAITING_REVIEW, st.reason
    assert st.prepared is not None and st.prepared.counts["train"] >= 5
    assert st.trained is not None and st.trained.epsilon is None and st.trained.steps == 8 * 19
    assert st.scores["canaries_tested"] >= 1 and st.scores["canaries_reproduced"] == 0
    assert st.version is not None
    v = saga.registry.version(st.version)
    assert v.tag("phi_status") == "restricted" and v.tag("stage") == "candidate"
    assert v.tag("data_hash") == st.prepared.data_hash and v.tag("privacy").startswith("none")
    assert PhiStore.of(saga.settings).exists(v.tag("adapter_ref"))  # the weights stay in the PHI store

    # the blind pairs: two notes per prompt, neither labelled
    pairs = client_of.pairs(saga.settings, st)
    assert len(pairs) == st.review.pairs >= 1 and all(p.a != p.b and p.prompt for p in pairs)
    with pytest.raises(ReviewRefused) as refused:
        await client_of.vote(saga.client, wid, BlindVote(reviewer="dr-a", pair=99, prefer="A"), saga.pool)
    assert "pair 99 does not exist" in refused.value.reason
    audited = await saga.pool.fetchval(
        "SELECT count(*) FROM audit_events WHERE workflow_id = $1 AND outcome = 'rejected'", wid
    )
    assert audited == 1
    for p in pairs:
        await client_of.vote(
            saga.client, wid, BlindVote(reviewer="dr-a", pair=p.pair, prefer="same"), saga.pool
        )

    done: PromotionStatus = await saga.client.get_workflow_handle_for(
        ModelPromotionWorkflow.run, wid
    ).result()
    assert done.stage is PromotionStage.PROMOTED, done.reason
    assert [g.version for g in done.golden] == [st.version] * 3  # shadow, canary, promote
    assert done.flag_rate is not None and done.flag_rate.responses == 0
    d = await deployment.current(saga.pool, saga.feature)
    assert (d.champion, d.candidate) == (st.version, None)
    assert [r["action"] for r in await deployment.history(saga.pool, saga.feature)] == [
        "shadow",
        "canary",
        "promote",
    ]
    champion = saga.registry.by_alias("champion")
    assert champion is not None and champion.version == st.version
    assert saga.registry.version(st.version).tag("approved_by") == "dr-a"
    assert await runs.baseline(saga.pool, saga.feature, "base") is not None  # the base scored first
    assert await runs.baseline(saga.pool, saga.feature, st.version) == pytest.approx(
        done.golden[0].score, abs=1e-4
    )

    # The previous version is one step away after the saga too: the base answers again.
    back = await client_of.restore(
        saga.client, saga.pool, saga.feature, "dr-ops", "flags after promotion", task_queue=saga.task_queue
    )
    assert (back.outcome, back.version, back.back_to) == ("rolled-back", st.version, None)
    d = await deployment.current(saga.pool, saga.feature)
    assert (d.champion, d.candidate) == (None, None)
    assert [r["action"] for r in await deployment.history(saga.pool, saga.feature)][-1] == "rollback"
    assert (
        saga.registry.by_alias("champion") is None
        and saga.registry.version(st.version).tag("stage") == "rejected"
    )
    again = await client_of.restore(saga.client, saga.pool, saga.feature, "dr-ops", "twice", saga.task_queue)
    assert again.outcome == "refused" and "no promoted model serves" in again.reason
    never = await saga.client.execute_workflow(
        ModelRollbackWorkflow.run,
        RestoreInput(feature=saga.feature, version=st.version, by="dr-ops", reason="stale read"),
        id=f"{rollback_id(saga.feature, st.version)}-stale",
        task_queue=saga.task_queue,
    )
    assert never.outcome == "refused" and "no longer serves" in never.reason


async def test_users_flags_in_canary_roll_the_candidate_back(saga: Saga) -> None:
    wid = (
        await client_of.start(
            saga.client, saga.input("flagged", shadow_hours=0, canary_hours=0.5), task_queue=saga.task_queue
        )
    ).workflow_id
    st = await saga.at(wid, PromotionStage.AWAITING_REVIEW)
    for p in client_of.pairs(saga.settings, st):
        await client_of.vote(
            saga.client, wid, BlindVote(reviewer="dr-b", pair=p.pair, prefer="same"), saga.pool
        )
    await saga.at(wid, PromotionStage.CANARY)
    assert st.version is not None
    # the gateway's log of the candidate's answers, and what the team said of them: 6 of 60 flagged
    for i in range(60):
        rid = f"{wid}-r{i}"
        await saga.pool.execute(
            """INSERT INTO llm_calls (request_id, team_id, use_case, requested_tier, tier, model, outcome)
               VALUES ($1, 'team-notes', $2, 'standard', 'standard', $3, 'ok')""",
            rid,
            saga.feature,
            served_model(st.version),
        )
        if i % 10 == 0:
            await saga.pool.execute(
                """INSERT INTO llm_feedback (response_id, team_id, use_case, model, flagged, reason)
                   VALUES ($1, 'team-notes', $2, $3, true, 'inaccurate')""",
                rid,
                saga.feature,
                served_model(st.version),
            )
    done: PromotionStatus = await saga.client.get_workflow_handle_for(
        ModelPromotionWorkflow.run, wid
    ).result()
    assert done.stage is PromotionStage.FLAGGED and done.reason.startswith("6 of 60 answers flagged (10.0%)")
    d = await deployment.current(saga.pool, saga.feature)
    assert (d.champion, d.candidate, d.stage) == (None, None, None)  # the base answers again
    assert saga.registry.version(st.version).tag("stage") == "rejected"
    alert = await saga.pool.fetchrow("SELECT kind, body FROM notifications WHERE workflow_id = $1", wid)
    assert alert is not None and alert["kind"] == "model-gate" and "flagged" in alert["body"]


async def test_a_training_worker_killed_mid_run_is_resumed_from_its_last_checkpoint(
    saga: Saga, note_base: Path
) -> None:
    env = {**os.environ, "CAREFLOW_FINETUNE_BASE_MODEL": str(note_base)}
    killed = f"{saga.gpu_queue}-killed"
    procs = [await start_ready("queue_worker", task_queues.GPU, killed, env=env, timeout=120, stderr=None)]
    try:
        inp = saga.input("resumed", model_queue=killed, train=SMALL.model_copy(update={"epochs": 80}))
        wid = (await client_of.start(saga.client, inp, task_queue=saga.task_queue)).workflow_id
        handle = saga.client.get_workflow_handle(wid)

        async def checkpointed() -> dict[str, object] | None:
            beat = await last_heartbeat(saga.client, handle)
            return beat if beat and beat.get("checkpoint") else None

        beat = await wait_until(checkpointed, timeout=180, what="a heartbeat with a checkpoint")
        os.kill(procs[0].pid, signal.SIGKILL)  # mid-training
        await procs[0].wait()
        procs.append(await start_ready("queue_worker", task_queues.GPU, killed, env=env, timeout=120))
        st = await saga.at(wid, PromotionStage.AWAITING_REVIEW, timeout=300)
        assert st.trained is not None, st.reason
        assert st.trained.resumed_from >= int(str(beat["step"])) > 0  # not from step 0
        done = await client_of.rollback(
            saga.client, wid, Rollback(by="ml-ops", reason="test over"), saga.pool
        )
        assert done.stage is PromotionStage.ROLLED_BACK and done.undone == [
            f"registry: version {st.version} rejected"
        ]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await asyncio.sleep(0)

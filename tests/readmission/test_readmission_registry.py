"""The model registry (MLflow, its store in the session's Postgres), the nightly drift check's real
activity, and the `readmission-nightly` Schedule on the dev server.

Registry: registering is idempotent on the caller's key; each version carries its data hash, model
hash, metrics, cut points and evaluation; a flagged subgroup blocks champion until approved; a loaded
model is the model that was trained.  Drift: a planted shift in a night's scores raises an alert row
(once per nightly run), a night drawn from the baseline does not.  Schedule: created or brought up to
date, overlap skip, a catch-up window, and a caught-up run covers its own night, not the night it ran."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import (
    Client,
    ScheduleBackfill,
    ScheduleOverlapPolicy,
    ScheduleRange,
    WorkflowHandle,
)
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.readmission import ReadmissionActivities
from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.fhir.client import FhirClient
from careflow.models.readmission import (
    NIGHTLY_ID_PREFIX,
    DischargeRecord,
    DischargeSource,
    ModelAlias,
    ModelScore,
    Outcomes,
    QualityReport,
    QualityRequest,
    RiskTier,
    Scores,
    Unscored,
    Window,
    WriteRequest,
)
from careflow.readmission import cohort, store, training
from careflow.readmission.features import DischargeFeatures, Disposition
from careflow.readmission.registry import ModelRegistry, PromotionBlocked
from careflow.readmission.training import TrainingRun
from starters.clients.readmission import CATCHUP_WINDOW, ensure_schedule
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.readmission import ReadmissionNightlyWorkflow, ReadmissionRiskWorkflow


@pytest.fixture(scope="module")
def small_run() -> TrainingRun:
    return training.run(4_000, 11)


def flagged(run: TrainingRun) -> TrainingRun:
    """The same run with its first subgroup row flagged (a gap the reviewer must accept)."""
    rows = list(run.report.subgroups)
    rows[0] = dataclasses.replace(rows[0], judged=True, flagged=True)
    return dataclasses.replace(run, report=dataclasses.replace(run.report, subgroups=rows))


def key() -> str:
    return f"readmission-training-test-{uuid.uuid4().hex[:8]}/train"


def test_a_version_is_registered_once_per_key_with_its_provenance(
    model_registry: ModelRegistry, small_run: TrainingRun
) -> None:
    k = key()
    v = model_registry.register(small_run, k, trained_by="tests")
    assert model_registry.register(small_run, k, trained_by="tests").version == v.version  # a retry
    assert model_registry.register(small_run, key(), trained_by="tests").version != v.version
    assert v.tag("data_hash") == small_run.data_hash and v.tag("model_sha256") == small_run.trained.sha256
    assert float(v.tag("auroc")) == pytest.approx(small_run.auroc, abs=1e-4)
    assert v.cuts.high == small_run.cuts.high and v.tag("discharges") == "4000"
    report = model_registry.evaluation(v.version)
    assert report["overall"]["auroc"] == pytest.approx(small_run.auroc)
    assert len(report["calibration"]) == 10
    attributes = {r["attribute"] for r in report["subgroups"]}
    assert attributes >= {"age_band", "sex", "race_ethnicity", "payer"}
    loaded = model_registry.load(v.version)
    X = cohort.generate(200, 99).X
    assert np.allclose(loaded.trained.predict(X), small_run.trained.predict(X))
    assert np.array_equal(loaded.baseline, small_run.baseline.round(5))


def test_a_flagged_subgroup_blocks_champion_until_a_reviewer_approves(
    model_registry: ModelRegistry, small_run: TrainingRun
) -> None:
    v = model_registry.register(flagged(small_run), key(), trained_by="tests")
    assert v.flagged and not v.approved_by
    with pytest.raises(PromotionBlocked, match="flagged subgroups"):
        model_registry.promote(v.version, ModelAlias.CHAMPION)
    assert "challenger" in model_registry.promote(v.version, ModelAlias.CHALLENGER).aliases  # shadow only
    model_registry.approve(v.version, "dr-quality", "the gap is inside its confidence interval")
    promoted = model_registry.promote(v.version, ModelAlias.CHAMPION)
    assert "champion" in promoted.aliases and promoted.approved_by == "dr-quality"
    assert promoted.tag("subgroups_approval_note") == "the gap is inside its confidence interval"
    champion = model_registry.by_alias(ModelAlias.CHAMPION)
    assert champion is not None and champion.version == v.version


@pytest_asyncio.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings)
    yield p
    await p.close()


async def plant(pool: asyncpg.Pool, version: str, window: Window, scores: np.ndarray) -> None:
    """A night of champion scores in the window (as the write activity stores them)."""
    feats = DischargeFeatures(
        age=70, charlson=2, los_days=4, emergent=True, admissions_12m=0, ed_visits_6m=0,
        disposition=Disposition.HOME,
    )  # fmt: skip
    step = (window.until - window.since) / (len(scores) + 1)
    for i, p in enumerate(scores):
        e = f"drift-{uuid.uuid4().hex[:10]}"
        at = window.since + step * (i + 1)
        record = DischargeRecord(encounter_id=e, patient_id="p", discharged_at=at, features=feats, lace=8)
        score = ModelScore(version=version, probability=float(p), tier=RiskTier.LOW)
        req = WriteRequest(
            workflow_id=f"readmission-{e}", source=DischargeSource.NIGHTLY, record=record,
            scores=Scores(champion=score),
        )  # fmt: skip
        await store.save(pool, req, "default", f"ra-{e}", None)


async def test_a_planted_shift_raises_one_alert_and_a_quiet_night_none(
    model_registry: ModelRegistry, small_run: TrainingRun, pool: asyncpg.Pool
) -> None:
    v = model_registry.register(small_run, key(), trained_by="tests")
    model_registry.approve(v.version, "tests", "a 4,000-discharge cohort: its small subgroups are noisy")
    model_registry.promote(v.version, ModelAlias.CHAMPION)
    fhir = FhirClient("http://127.0.0.1:9/fhir", audit=PostgresAuditTrail(pool), actor="tests")
    acts = ReadmissionActivities(fhir, pool, lambda: model_registry, "tests")  # the check reads no FHIR
    rng = np.random.default_rng(3)
    base = datetime(2001, 1, 1, 2, tzinfo=UTC) + timedelta(days=uuid.uuid4().int % 5000)
    quiet = Window(since=base - timedelta(days=1), until=base)
    shifted = Window(since=base, until=base + timedelta(days=1))
    await plant(pool, v.version, quiet, rng.choice(small_run.baseline, 150))
    await plant(pool, v.version, shifted, np.clip(rng.choice(small_run.baseline, 150) * 2.2, 0, 1))

    env = ActivityEnvironment()
    calm: QualityReport = await env.run(
        acts.quality_check, QualityRequest(window=quiet, discharged=160, workflow_id="nightly-quiet")
    )
    assert (calm.scored, calm.discharged, calm.shifted) == (150, 160, False)
    assert calm.psi is not None and calm.psi < calm.psi_threshold
    nightly = f"readmission-nightly-test-{uuid.uuid4().hex[:8]}"
    req = QualityRequest(window=shifted, discharged=150, workflow_id=nightly)
    hot: QualityReport = await env.run(acts.quality_check, req)
    assert hot.shifted and hot.psi is not None and hot.psi > hot.psi_threshold >= 0.2
    await env.run(acts.quality_check, req)  # a retried check records the alert once
    rows = [a for a in await store.alerts(pool, limit=100) if a["workflow_id"] in (nightly, "nightly-quiet")]
    assert len(rows) == 1 and rows[0]["model_version"] == v.version and rows[0]["scored"] == 150
    assert rows[0]["psi"] == pytest.approx(hot.psi, abs=1e-4)


# -- the Schedule, on the dev server (the time-skipping server has no Schedules) --------------------
windows: dict[str, Window] = {}


@activity.defn(name="readmission.unscored")
async def unscored(window: Window) -> Unscored:
    windows[activity.info().workflow_id or ""] = window
    return Unscored(discharged=0, already_scored=0, encounter_ids=[])


@activity.defn(name="readmission.quality_check")
async def quality_check(req: QualityRequest) -> QualityReport:
    return QualityReport(
        champion_version="1", discharged=0, scored=0, psi=None, psi_threshold=0.2, shifted=False
    )


@activity.defn(name="readmission.settle_outcomes")
async def settle_outcomes(until: datetime) -> Outcomes:
    return Outcomes(settled=0, readmitted=0)


async def exists(handle: WorkflowHandle) -> bool:
    try:
        await handle.describe()
    except RPCError:
        return False
    return True


async def test_the_nightly_schedule_skips_overlaps_and_a_caught_up_run_covers_its_own_night(
    client: Client, task_queue: str
) -> None:
    schedule_id = f"readmission-nightly-test-{uuid.uuid4().hex[:8]}"
    assert await ensure_schedule(client, task_queue=task_queue, schedule_id=schedule_id) is True
    assert await ensure_schedule(client, task_queue=task_queue, schedule_id=schedule_id) is False
    handle = client.get_schedule_handle(schedule_id)
    try:
        desc = await handle.describe()
        [daily] = desc.schedule.spec.calendars  # the server keeps the cron "0 2 * * *" as a calendar
        assert (daily.hour, daily.minute) == ((ScheduleRange(2),), (ScheduleRange(0),))
        assert desc.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        assert desc.schedule.policy.catchup_window == CATCHUP_WINDOW
        # The server was down at 02:00 three nights ago: the run made up for it covers that night.
        night = (datetime.now(UTC) - timedelta(days=3)).replace(hour=2, minute=0, second=0, microsecond=0)
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[ReadmissionNightlyWorkflow, ReadmissionRiskWorkflow],
            activities=[unscored, quality_check, settle_outcomes],
            workflow_runner=sandbox_runner(),
        ):
            await handle.backfill(
                ScheduleBackfill(
                    start_at=night - timedelta(minutes=1),
                    end_at=night + timedelta(minutes=1),
                    overlap=ScheduleOverlapPolicy.ALLOW_ALL,
                )
            )
            wid = f"{NIGHTLY_ID_PREFIX.rstrip('-')}-{night.strftime('%Y-%m-%dT%H:%M:%SZ')}"
            run = client.get_workflow_handle_for(ReadmissionNightlyWorkflow.run, wid)
            await wait_until(lambda: exists(run), what="the backfilled run to start")
            summary = await run.result()
        assert windows[wid] == Window(since=night - timedelta(hours=24), until=night)
        assert summary.window == windows[wid] and summary.started == 0
    finally:
        await handle.delete()

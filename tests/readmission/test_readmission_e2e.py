"""Readmission scoring with its real activities on the Temporal dev server: the sandbox EHR seeded with
synthetic patients, the MLflow registry in the session's Postgres with a trained champion and a
shadow challenger, the AI gateway (offline provider).

Both triggers: ADT^A03 over MLLP (AA only after the durable start; duplicates attach; bad ADT AE/AR)
and `POST /v1/events/discharges` (an Encounter id, or the Encounter itself)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.readmission import ReadmissionActivities
from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.fhir.client import FhirClient
from careflow.fhir.synthetic import generate_ehr
from careflow.hl7.listener import MllpListener
from careflow.hl7.mllp import Frame, MllpFramer, wrap
from careflow.idempotency import step_identifier
from careflow.models.readmission import ModelAlias, ReadmissionStage, RiskTier, workflow_id
from careflow.readmission import store, training
from careflow.readmission.registry import ModelRegistry
from starters.api.app import create_app
from starters.clients.readmission import adt_route
from tests.support.fhir_sandbox import PREFIX, sandbox_app, serve
from tests.support.hl7_samples import adt_a03
from tests.support.teams import chart_reader_token
from workers.registry import ProcessClients, activities_for, sandbox_runner, workflows_for
from workflows.readmission import ReadmissionRiskWorkflow


@dataclass(frozen=True)
class Ehr:
    base: str
    encounters: list[str]  # the latest inpatient stay of each loaded patient that has one


@pytest_asyncio.fixture(scope="module")
async def models(model_registry: ModelRegistry) -> tuple[str, str]:
    """A champion and a challenger (two seeds), approved if a small cohort flagged a subgroup."""
    versions = []
    for seed in (5, 6):
        run = training.run(6_000, seed)
        v = model_registry.register(run, f"test-{uuid.uuid4().hex}/train", trained_by="tests")
        if v.flagged:
            model_registry.approve(v.version, "tests", "a 6,000-discharge test cohort: small subgroups")
        versions.append(v.version)
    model_registry.promote(versions[0], ModelAlias.CHAMPION)
    model_registry.promote(versions[1], ModelAlias.CHALLENGER)
    return versions[0], versions[1]


def visit(patient_id: str, klass: str, start: datetime, hours: int) -> dict[str, object]:
    end = start + timedelta(hours=hours)
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": start.isoformat(), "end": end.isoformat()},
    }


async def frequent_flyer(fhir: FhirClient, patient_id: str, stay: dict[str, object]) -> None:
    """Three admissions in the year and four ED visits in the six months before the stay: what puts a
    patient at the top of the worklist (the synthetic EHR itself has few readmissions and no ED visits)."""
    start = datetime.fromisoformat(str(stay["period"]["start"]))  # type: ignore[index]
    for days in (300, 200, 120):
        await fhir.create(visit(patient_id, "IMP", start - timedelta(days=days), 72))
    for days in (150, 90, 45, 20):
        await fhir.create(visit(patient_id, "EMER", start - timedelta(days=days), 5))


@pytest_asyncio.fixture(scope="module")
async def ehr(database_url: str) -> AsyncIterator[Ehr]:
    """The latest inpatient stay of each seeded patient with one; every other such patient is given a
    frequent flyer's history so the stays span the risk tiers."""
    data = generate_ehr(seed=23, patients=8, as_of=datetime.now(UTC).date())
    pool = await create_pool(Settings())
    try:
        async with serve(sandbox_app(database_url)) as root:
            base = root + PREFIX
            async with FhirClient(base, audit=PostgresAuditTrail(pool), actor="test-loader") as fhir:
                encounters: list[str] = []
                for bundle in data.bundles:
                    await fhir.transaction(bundle)
                for profile in data.profiles:
                    if not profile.admissions:
                        continue
                    [patient] = await fhir.search("Patient", {"identifier": profile.mrn})
                    found = await fhir.search("Encounter", {"patient": patient["id"], "class": "IMP"})
                    stays = [e for e in found if e.get("status") == "finished"]
                    latest = max(stays, key=lambda e: str(e["period"]["end"]))
                    if len(encounters) % 2:
                        await frequent_flyer(fhir, str(patient["id"]), latest)
                    encounters.append(str(latest["id"]))
            yield Ehr(base, encounters)
    finally:
        await pool.close()


@pytest_asyncio.fixture
async def worker(client: Client, task_queue: str, ehr: Ehr, models: tuple[str, str]) -> AsyncIterator[None]:
    pool = await create_pool(Settings())
    clients = ProcessClients(Settings(fhir_base_url=ehr.base), pool, client.data_converter.payload_codec,
                             f"worker-{task_queue}")  # fmt: skip
    try:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=workflows_for("careflow-main"),
            activities=activities_for("careflow-main", clients),
            workflow_runner=sandbox_runner(),
        ):
            yield
    finally:
        await pool.close()


async def send(listener: MllpListener, *messages: bytes) -> list[bytes]:
    reader, writer = await asyncio.open_connection(listener.host, listener.port)
    for m in messages:
        writer.write(wrap(m))
    await writer.drain()
    framer, acks = MllpFramer(), []
    while len(acks) < len(messages):
        data = await asyncio.wait_for(reader.read(65536), timeout=30)
        assert data
        acks += [f.payload for f in framer.feed(data) if isinstance(f, Frame)]
    writer.close()
    return acks


async def runs_of(client: Client, wid: str) -> int:
    return len([w async for w in client.list_workflows(f"WorkflowId = '{wid}'")])


async def test_adt_discharge_is_scored_once_with_a_risk_assessment_and_bad_adt_is_refused(
    client: Client, task_queue: str, ehr: Ehr, models: tuple[str, str], worker: None
) -> None:
    champion, challenger = models
    encounter = ehr.encounters[0]
    listener = MllpListener({"ADT^A03": adt_route(client, task_queue)}, port=0)
    await listener.start()
    try:
        message = adt_a03(f"A03-{uuid.uuid4().hex[:6]}", visit=encounter)
        acks = await send(listener, message, message, adt_a03("A03-BAD", visit=""), b"garbage\r")
    finally:
        await listener.close()
    assert [a.split(b"MSA|")[1][:2] for a in acks] == [b"AA", b"AA", b"AE", b"AR"]

    wid = workflow_id(encounter)
    status = await client.get_workflow_handle_for(ReadmissionRiskWorkflow.run, wid).result()
    assert status.stage is ReadmissionStage.SCORED and status.source == "adt"
    assert status.model_version == champion and status.probability is not None
    assert await runs_of(client, wid) == 1  # the resent ADT attached

    pool = await create_pool(Settings())
    try:
        rows = {r.role: r for r in await store.of_encounter(pool, encounter)}
        async with FhirClient(ehr.base, audit=PostgresAuditTrail(pool), actor="test-reader") as fhir:
            [ra] = await fhir.search(
                "RiskAssessment", {"identifier": step_identifier(wid, "risk-assessment")}
            )
    finally:
        await pool.close()
    # the champion's score is on the worklist and in the EHR; the challenger's is logged beside it
    assert rows["champion"].model_version == champion and rows["challenger"].model_version == challenger
    assert rows["challenger"].risk_assessment_id is None and rows["challenger"].narrative == ""
    assert ra["id"] == status.risk_assessment_id == rows["champion"].risk_assessment_id
    [prediction] = ra["prediction"]
    assert prediction["probabilityDecimal"] == status.probability
    assert prediction["qualitativeRisk"]["text"] == status.tier
    assert ra["method"]["coding"][0]["version"] == champion
    assert {"reference": f"Encounter/{encounter}"} in ra["basis"]
    assert ra["encounter"]["reference"] == f"Encounter/{encounter}"
    assert len(rows["champion"].factors) == 3


@dataclass
class Api:
    http: httpx.AsyncClient
    token: str

    async def discharge(self, body: object) -> httpx.Response:
        return await self.http.post("/v1/events/discharges", json=body, headers={"x-api-key": self.token})


@pytest_asyncio.fixture
async def api(settings: Settings, task_queue: str) -> AsyncIterator[Api]:
    app = create_app(settings)
    app.state.discharges_task_queue = task_queue
    token = await chart_reader_token(settings)
    async with serve(app) as root, httpx.AsyncClient(base_url=root, timeout=30) as http:
        yield Api(http, token)


async def test_fhir_discharge_events_score_every_stay_and_the_high_tier_gets_narrative_and_task(
    client: Client, ehr: Ehr, api: Api, worker: None
) -> None:
    encounters = ehr.encounters[1:]
    assert len(encounters) >= 3, "the seeded EHR should hold several inpatient stays"
    answers = [await api.discharge({"encounter_id": e}) for e in encounters]
    assert [(a.status_code, a.json()["started"]) for a in answers] == [(202, True)] * len(encounters)
    again = await api.discharge({"resourceType": "Encounter", "id": encounters[0], "status": "finished",
                                 "hospitalization": {"dischargeDisposition": {"text": "home"}}})  # fmt: skip
    assert again.status_code == 202 and again.json() == {
        "workflow_id": workflow_id(encounters[0]),
        "started": False,
    }

    refused = await api.discharge({"resourceType": "Encounter", "id": "x1", "status": "in-progress"})
    assert refused.status_code == 422 and "not 'finished'" in refused.json()["error"]["message"]
    assert (await api.discharge({"encounter_id": "../Patient/1"})).status_code == 400

    statuses = await asyncio.gather(
        *(
            client.get_workflow_handle_for(ReadmissionRiskWorkflow.run, workflow_id(e)).result()
            for e in encounters
        )
    )
    assert {s.stage for s in statuses} == {ReadmissionStage.SCORED}
    pool = await create_pool(Settings())
    try:
        rows = [r for e in encounters for r in await store.of_encounter(pool, e) if r.role == "champion"]
    finally:
        await pool.close()
    assert len(rows) == len(encounters)
    for r in rows:
        assert (r.task_id is not None) == (r.tier == RiskTier.HIGH.value)
        assert bool(r.narrative) == (r.tier == RiskTier.HIGH.value)
    high = [r for r in rows if r.tier == RiskTier.HIGH.value]
    assert high, f"no high-risk stay among {[(r.probability, r.tier) for r in rows]}"
    for r in high:
        # the narrative cites the model's own top factors, nothing else
        assert r.narrative_engine.startswith("offline")
        assert "[factor:1]" in r.narrative and r.factors[0]["label"] in r.narrative


async def test_the_30_day_outcome_is_settled_from_the_ehr(
    ehr: Ehr, model_registry: ModelRegistry, worker: None
) -> None:
    """After the discharges above were scored: a stay followed by another admission within 30 days is
    readmitted, the other month-old stays are not, recent ones wait for their 30 days."""
    now = datetime.now(UTC)
    pool = await create_pool(Settings())
    try:
        rows = {r.encounter_id: r for e in ehr.encounters for r in await store.of_encounter(pool, e)
                if r.role == "champion"}  # fmt: skip
        old = sorted((r for r in rows.values() if r.discharged_at < now - timedelta(days=31)),
                     key=lambda r: r.discharged_at)  # fmt: skip
        assert len(old) >= 2, "the seeded EHR should hold month-old stays"
        back = old[0]
        async with FhirClient(ehr.base, audit=PostgresAuditTrail(pool), actor="test-loader") as fhir:
            await fhir.create(visit(back.patient_id, "IMP", back.discharged_at + timedelta(days=12), 48))
            acts = ReadmissionActivities(fhir, pool, lambda: model_registry, "tests")
            outcomes = await ActivityEnvironment().run(acts.settle_outcomes, now)
        settled = {e: r.readmitted for e in rows for r in await store.of_encounter(pool, e)}
    finally:
        await pool.close()
    assert outcomes.settled >= len(old) and outcomes.readmitted >= 1
    assert settled[back.encounter_id] is True
    assert all(settled[r.encounter_id] is False for r in old[1:] if r.patient_id != back.patient_id)
    assert all(settled[e] is None for e, r in rows.items() if r.discharged_at > now - timedelta(days=29))

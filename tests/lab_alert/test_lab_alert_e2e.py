"""The lab-alert pipeline with its real activities: the sandbox EHR seeded with synthetic patients, the
AI gateway (offline provider), the notifier and the audit trail, on the Temporal dev server.

The same creatinine is critical for a patient with a normal baseline (alert Task + push) and not for
a CKD patient whose baseline is raised (no alert)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.fhir.client import FhirClient
from careflow.fhir.synthetic import generate_ehr
from careflow.hl7.oru import parse_oru
from careflow.idempotency import step_identifier, step_key
from careflow.labs.normalise import results_from_oru
from careflow.models.lab_alert import AlertAck, LabAlertInput, LabResult, Urgency, workflow_id
from starters.clients.history import export_history
from tests.support.fhir_sandbox import PREFIX, sandbox_app, serve
from tests.support.hl7_samples import oru
from tests.support.http_receiver import http_receiver
from tests.support.wait import wait_until
from workers.registry import ProcessClients, activities_for, sandbox_runner, workflows_for
from workflows.lab_alert import LabResultAlertWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"


@pytest.mark.parametrize("scenario", ["normal-baseline", "ckd-baseline"])
async def test_same_creatinine_alerts_only_the_patient_with_a_normal_baseline(
    client: Client, database_url: str, task_queue: str, scenario: str
) -> None:
    ehr = generate_ehr(seed=11, patients=12, as_of=datetime.now(UTC).date())
    want_ckd = scenario == "ckd-baseline"
    profile = next(p for p in ehr.profiles if ("ckd3" in p.conditions) == want_ckd and p.admissions > 0)
    pool = await create_pool(Settings())
    async with serve(sandbox_app(database_url)) as root, http_receiver() as push:
        base = root + PREFIX
        async with FhirClient(base, audit=PostgresAuditTrail(pool), actor="test-loader") as fhir:
            await fhir.transaction(ehr.bundles[0])
            await fhir.transaction(ehr.bundles[profile.index + 1])
            [patient] = await fhir.search("Patient", {"identifier": profile.mrn})
        settings = Settings(fhir_base_url=base, notify_webhook_url=push.url)
        clients = ProcessClients(settings, pool, client.data_converter.payload_codec, f"worker-{task_queue}")
        key = uuid.uuid4().hex
        result = LabResult(
            result_key=key,
            patient_id=profile.mrn,  # what a lab sends in PID-3
            loinc="2160-0",
            display="Creatinine",
            value=3.0,
            value_text="3.0",
            units="mg/dL",
            reference_range="0.6-1.2",
            abnormal_flags=["H"],
        )
        async with main_worker(client, task_queue, clients):
            handle = await client.start_workflow(
                LabResultAlertWorkflow.run,
                LabAlertInput(result=result),
                id=workflow_id(key),
                task_queue=task_queue,
            )
            if want_ckd:
                out = await handle.result()
            else:
                await wait_until(lambda: push.requests, timeout=60, what="the push notification")
                await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by="dr-test"))
                out = await handle.result()
        async with FhirClient(base, audit=PostgresAuditTrail(pool), actor="test-reader") as fhir:
            tasks = await fhir.search(
                "Task", {"identifier": step_identifier(workflow_id(key), "alert-physician")}
            )
    try:
        assert out.assessment.ai_engine.startswith("offline")
        if want_ckd:
            assert out.assessment.rule_urgency != Urgency.CRITICAL
            assert out.assessment.urgency != Urgency.CRITICAL
            assert out.status.stage == "no-alert" and tasks == [] and push.requests == []
            assert any("baseline" in r for r in out.assessment.reasons)
        else:
            assert out.assessment.urgency == Urgency.CRITICAL
            assert out.status.stage == "acknowledged"
            [task] = tasks
            assert task["for"]["reference"] == f"Patient/{patient['id']}"
            assert task["owner"]["reference"].startswith("Practitioner/")
            [req] = push.requests
            assert req["headers"]["idempotency-key"] == step_key(workflow_id(key), "alert-physician")
            assert req["body"]["task"] == f"Task/{task['id']}"
        # every FHIR read the pipeline made is audited under its workflow id
        audited = await _audit_rows(pool, workflow_id(key))
        assert {"Observation", "Condition", "Encounter", "PractitionerRole"} <= audited
        kinds = await _audit_kinds(pool, workflow_id(key))
        assert kinds.count(("ai-inference", "worker-" + task_queue)) == 1
        if not want_ckd:
            assert kinds.count(("reviewer-action", "dr-test")) == 1  # the acknowledgement
    finally:
        await pool.close()


def main_worker(client: Client, task_queue: str, clients: ProcessClients) -> Worker:
    """The registry's careflow-main workflows and real activities, as a worker process runs them."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=workflows_for("careflow-main"),
        activities=activities_for("careflow-main", clients),
        workflow_runner=sandbox_runner(),
    )


async def _audit_kinds(pool: asyncpg.Pool, wid: str) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT event_type, actor FROM audit_events WHERE workflow_id = $1", wid)
    return [(r["event_type"], r["actor"]) for r in rows]


async def _audit_rows(pool: asyncpg.Pool, wid: str) -> set[str]:
    rows = await pool.fetch("SELECT resource_type FROM audit_events WHERE workflow_id = $1", wid)
    return {r["resource_type"] for r in rows}


async def test_unknown_mrn_still_alerts_the_lab_and_the_charge_nurse(
    client: Client, database_url: str, task_queue: str
) -> None:
    """A critical potassium for an MRN the EHR does not know: no chart to read, no physician to
    find, and still an alert, flagged, with what the message says of the patient, to the lab and the
    charge nurse at once and to the chief at 15 minutes.  The audit trail never holds the raw MRN."""
    ehr = generate_ehr(seed=11, patients=2, as_of=datetime.now(UTC).date())
    mrn = f"MRN-UNK-{uuid.uuid4().hex[:8]}"
    message = parse_oru(
        oru(
            "UNMATCHED-1",
            patient_id=mrn,
            filler=f"FIL-{uuid.uuid4().hex[:8]}",
            results=[("2823-3", "Potassium", "7.1", "mmol/L", "3.5-5.1", "HH")],
            ordering_provider="9876^HOUSE^GREGORY",
        )
    )
    [result] = results_from_oru(message, datetime.now(UTC))
    wid = workflow_id(result.result_key)
    pool = await create_pool(Settings())
    async with serve(sandbox_app(database_url)) as root, http_receiver() as push:
        base = root + PREFIX
        async with FhirClient(base, audit=PostgresAuditTrail(pool), actor="test-loader") as fhir:
            await fhir.transaction(ehr.bundles[0])  # the staff roster only
        settings = Settings(fhir_base_url=base, notify_webhook_url=push.url)
        clients = ProcessClients(settings, pool, client.data_converter.payload_codec, f"worker-{task_queue}")
        async with main_worker(client, task_queue, clients):
            handle = await client.start_workflow(
                LabResultAlertWorkflow.run, LabAlertInput(result=result), id=wid, task_queue=task_queue
            )
            await wait_until(
                lambda: len(push.requests) == 2, timeout=60, what="the lab and charge nurse pushes"
            )
            await handle.signal(
                LabResultAlertWorkflow.acknowledge, AlertAck(by="rn-charge", role="charge_nurse")
            )
            out = await handle.result()
        if os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1":
            written = await export_history(client, wid, HISTORIES)
            written.replace(HISTORIES / "LabResultAlertWorkflow-unmatched-visible.json")
        async with FhirClient(base, audit=PostgresAuditTrail(pool), actor="test-reader") as fhir:
            tasks = {
                level: await fhir.search("Task", {"identifier": step_identifier(wid, f"alert-{level}")})
                for level in ("lab", "charge_nurse", "physician")
            }
    try:
        assert out.assessment.urgency == Urgency.CRITICAL
        assert out.status.stage == "acknowledged"
        assert [d.level for d in out.status.deliveries] == ["lab", "charge_nurse"]
        assert tasks["physician"] == []
        [lab], [nurse] = tasks["lab"], tasks["charge_nurse"]
        for task in (lab, nurse):
            assert task["for"]["identifier"]["value"] == mrn and "reference" not in task["for"]
            assert task["description"].startswith("PATIENT NOT MATCHED IN THE EHR: JANE DOE, born 1950-01-01")
            assert "GREGORY HOUSE (9876)" in task["description"]
        assert lab["owner"]["identifier"]["value"] == "GENHOSP"
        assert nurse["owner"]["reference"].startswith("Practitioner/")
        assert {r["body"]["level"] for r in push.requests} == {"lab", "charge_nurse"}
        assert all("PATIENT NOT MATCHED" in r["body"]["summary"] for r in push.requests)
        # The audit trail names the patient by a keyed hash, never by the MRN the lab sent.
        subjects = {
            r["patient_id"]
            for r in await pool.fetch("SELECT patient_id FROM audit_events WHERE workflow_id = $1", wid)
        }
        assert mrn not in subjects
        assert any(s and s.startswith("mrn-") for s in subjects)
        assert (
            await pool.fetchval("SELECT count(*) FROM audit_events WHERE detail::text LIKE $1", f"%{mrn}%")
            == 0
        )
    finally:
        await pool.close()

"""PriorAuthWorkflow with its real activities on the Temporal dev server: the sandbox EHR seeded with a
synthetic patient whose semaglutide order needs prior authorization, a payer policy in the knowledge
base, the offline drafter through the gateway, careflow's sandbox payer, the audit trail.

Covered here: the review update's validator refuses an unauthorised reviewer and `submit_review`
audits the attempt; a duplicate order event starts no second workflow; a workflow started by the
`temporal` CLI with plain JSON completes; kill -9 of a worker mid-write leaves one DocumentReference
and one Task.  Each test copies the seeded order under a fresh order id (workflow ids never repeat).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from careflow import task_queues
from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.fhir import codes
from careflow.fhir.client import FhirClient
from careflow.fhir.resources import validate_resource
from careflow.fhir.synthetic import generate_ehr
from careflow.idempotency import step_identifier, step_key
from careflow.kb.ingest import ingest_files
from careflow.models.prior_auth import (
    PriorAuthInput,
    PriorAuthStatus,
    ReviewAction,
    ReviewRequest,
    workflow_id,
)
from careflow.prior_auth.resources import AI_GENERATED_EXTENSION
from starters.api import fhir as api_fhir
from starters.api import payer as api_payer
from starters.clients.history import export_history
from starters.clients.prior_auth import start_prior_auth, submit_review
from starters.clients.updates import ReviewRefused
from tests.conftest import BIN
from tests.support.processes import start_ready
from tests.support.serving import serve
from tests.support.wait import wait_until
from workers.registry import ProcessClients, activities_for, sandbox_runner, workflows_for
from workflows import search_attributes as sa
from workflows.prior_auth import PriorAuthWorkflow

SEED, PATIENT = 61, 1  # seed 61's patient 1: type 2 diabetes + obesity, a semaglutide order
TEMPLATE_ORDER = f"ord-{SEED}-{PATIENT}-semaglutide"
TENANT = "pa-dev-test"
HISTORIES = Path(__file__).resolve().parents[1] / "histories"
POLICY = """---
Document-Id: pa-test-semaglutide
Title: Semaglutide prior authorization policy (test plan)
Organization: careflow test health plan
Effective-Date: 2025-01-01
Doc-Type: payer_policy
Version: 1
---

## 1 Scope

This policy covers semaglutide for adults with type 2 diabetes mellitus who need more than metformin.

## 2 Coverage criteria

Criterion 1: Diagnosis of type 2 diabetes mellitus (E11.9).

Criterion 2: Current or prior treatment with metformin.

Criterion 3: The most recent HbA1c is 7.0% or higher.

## 3 Duration

Approvals are valid for twelve months.
"""


@dataclass
class Stack:
    fhir_base: str
    payer_base: str
    pool: asyncpg.Pool
    fhir: FhirClient

    def settings(self) -> Settings:
        return Settings(fhir_base_url=self.fhir_base, payer_base_url=self.payer_base)

    async def new_order(self) -> str:
        """A copy of the seeded semaglutide order under a fresh order id."""
        [template] = await self.fhir.search(
            "MedicationRequest", {"identifier": f"{codes.ORDER_ID}|{TEMPLATE_ORDER}"}
        )
        order_id = f"ord-t{uuid.uuid4().hex[:10]}-semaglutide"
        copy = {k: v for k, v in template.items() if k not in ("id", "meta")}
        copy["identifier"] = [{"system": codes.ORDER_ID, "value": order_id}]
        await self.fhir.create(copy)
        return order_id

    async def pa_staff(self) -> str:
        roles = await self.fhir.search("PractitionerRole", {"code": f"{codes.ROLE_SYSTEM}|pa-staff"})
        return str(roles[0]["practitioner"]["reference"])

    async def written(self, rtype: str, wid: str, step: str) -> list[dict[str, Any]]:
        return await self.fhir.search(rtype, {"identifier": step_identifier(wid, step)})


def _app(database_url: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)
    app.include_router(api_fhir.router, prefix="/fhir/r4")
    app.include_router(api_payer.router, prefix="/payer/r4")
    return app


@pytest.fixture
async def stack(database_url: str, client: Client, tmp_path: Path) -> AsyncIterator[Stack]:
    """The sandbox EHR and payer on one port, the synthetic patient, the payer policy in the KB."""
    pool = await create_pool(Settings())
    ehr = generate_ehr(seed=SEED, patients=PATIENT + 1, as_of=datetime.now(UTC).date())
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "pa-test-semaglutide.md").write_text(POLICY)
    await ingest_files(pool, TENANT, tmp_path / "kb", ["pa-test-semaglutide.md"])
    try:
        async with serve(_app(database_url)) as root:
            fhir = FhirClient(root + "/fhir/r4", audit=PostgresAuditTrail(pool), actor="test-loader")
            async with fhir:
                await fhir.transaction(ehr.bundles[0])
                await fhir.transaction(ehr.bundles[PATIENT + 1])
                yield Stack(root + "/fhir/r4", root + "/payer/r4", pool, fhir)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def worker(client: Client, stack: Stack, task_queue: str) -> AsyncIterator[None]:
    clients = ProcessClients(
        stack.settings(), stack.pool, client.data_converter.payload_codec, f"w-{task_queue}"
    )
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=workflows_for(task_queues.MAIN),
        activities=activities_for(task_queues.MAIN, clients),
        workflow_runner=sandbox_runner(),
    ):
        yield


async def status(handle: WorkflowHandle) -> PriorAuthStatus:
    return await handle.query(PriorAuthWorkflow.status)


async def awaiting_review(handle: WorkflowHandle, timeout: float = 90) -> PriorAuthStatus:
    async def ready() -> PriorAuthStatus | None:
        s = await status(handle)
        return s if s.stage == "awaiting_review" else None

    result: PriorAuthStatus = await wait_until(ready, timeout=timeout, what="the draft to await review")
    return result


def attachment_text(doc: dict[str, Any]) -> str:
    return base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()


async def test_review_update_refuses_unauthorised_reviewer_then_approval_reaches_the_payer(
    client: Client, stack: Stack, task_queue: str
) -> None:
    order_id = await stack.new_order()
    wid = workflow_id(order_id)
    async with worker(client, stack, task_queue):
        started = await start_prior_auth(client, order_id, tenant_id=TENANT, task_queue=task_queue)
        assert started.started
        handle = client.get_workflow_handle_for(PriorAuthWorkflow.run, wid)
        s = await awaiting_review(handle)

        # step 3: the payer criteria come verbatim from the policy; step 4: each is assessed
        assert [c.criterion for c in s.criteria] == [
            "Diagnosis of type 2 diabetes mellitus (E11.9).",
            "Current or prior treatment with metformin.",
            "The most recent HbA1c is 7.0% or higher.",
        ]
        assert [c.status for c in s.criteria] == ["met", "met", "met"]
        # the HbA1c criterion is met by the patient's latest HbA1c, read as an Observation
        [hba1c] = s.criteria[2].evidence_ids
        assert hba1c.startswith("Observation/")
        [order] = await stack.fhir.search("MedicationRequest", {"identifier": f"{codes.ORDER_ID}|{order_id}"})
        hba1cs = await stack.fhir.search(
            "Observation", {"subject": order["subject"]["reference"], "code": f"{codes.LOINC}|4548-4"}
        )
        latest = max(hba1cs, key=lambda o: str(o["effectiveDateTime"]))
        assert hba1c == f"Observation/{latest['id']}" and latest["valueQuantity"]["value"] >= 7.0
        assert all(c.evidence_ids for c in s.criteria) and not s.template and not s.partial_context
        # step 5: a preliminary, AI-marked DocumentReference and a review Task, both valid R4
        [doc] = await stack.written("DocumentReference", wid, "draft-document")
        [task] = await stack.written("Task", wid, "review-task")
        for resource in (doc, task):
            validate_resource(resource)
        assert doc["id"] == s.document_reference_id and task["id"] == s.task_id
        assert doc["docStatus"] == "preliminary"
        [ai] = [e for e in doc["extension"] if e["url"] == AI_GENERATED_EXTENSION]
        assert {x["url"]: x.get("valueString") for x in ai["extension"]}["model"].startswith("offline/")
        assert "| Diagnosis of type 2 diabetes mellitus (E11.9). | met |" in attachment_text(doc)
        assert task["status"] == "requested" and task["intent"] == "order"
        assert task["focus"]["reference"].startswith("MedicationRequest/")
        assert task["owner"]["reference"].startswith("PractitionerRole/")
        assert task["performerType"][0]["coding"][0]["code"] == "pa-staff"
        # step 6: the review notification, recorded once under the workflow's dedup key
        notes = await stack.pool.fetch(
            "SELECT kind FROM notifications WHERE dedup_key = $1", step_key(wid, "notify-review")
        )
        assert [n["kind"] for n in notes] == ["pa-review"]

        # a duplicate order event attaches to the running workflow
        again = await start_prior_auth(client, order_id, tenant_id=TENANT, task_queue=task_queue)
        assert not again.started
        existing = await client.start_workflow(
            PriorAuthWorkflow.run,
            PriorAuthInput(order_id=order_id, tenant_id=TENANT),
            id=wid,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        assert existing.result_run_id == (await handle.describe()).run_id

        # the validator refuses a reviewer without the PA review role; the attempt is audited
        with pytest.raises(ReviewRefused) as refused:
            await submit_review(
                client,
                wid,
                ReviewRequest(action="approve", reviewer_id="Practitioner/not-pa-staff"),
                stack.pool,
            )
        assert "review role" in refused.value.reason
        staff = await stack.pa_staff()
        with pytest.raises(ReviewRefused):  # request_changes without comments
            await submit_review(
                client, wid, ReviewRequest(action="request_changes", reviewer_id=staff), stack.pool
            )

        edited = attachment_text(doc).split("\n## Payer criteria")[0] + "\n\nReviewed by PA staff."
        outcome = await submit_review(
            client, wid, ReviewRequest(action="approve", reviewer_id=staff, edited_letter=edited), stack.pool
        )
        assert outcome.accepted and outcome.stage == "submitting"
        out = await handle.result()
        if os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1":
            written = await export_history(client, wid, HISTORIES)
            written.replace(HISTORIES / "PriorAuthWorkflow-dev-approved.json")

    final = out.status
    assert final.stage == "approved" and final.payer_outcome is not None
    assert final.payer_outcome.preauth_ref
    [doc] = await stack.written("DocumentReference", wid, "draft-document")
    [task] = await stack.written("Task", wid, "review-task")
    assert doc["docStatus"] == "final" and attachment_text(doc) == edited
    assert task["status"] == "completed" and task["owner"]["reference"] == staff

    rows = await stack.pool.fetch(
        "SELECT actor, outcome, resource_type, event_type FROM audit_events WHERE workflow_id = $1", wid
    )
    reviews = sorted((r["actor"], r["outcome"]) for r in rows if r["event_type"] == "reviewer-action")
    assert reviews == sorted(
        [("Practitioner/not-pa-staff", "rejected"), (staff, "rejected"), (staff, "success")]
    )
    reads = {r["resource_type"] for r in rows if r["event_type"] == "phi-access"}
    # the context reads are the six types and the measurements (plus the order, roster and payer look-ups)
    assert {"Patient", "Encounter", "Condition", "MedicationRequest", "Procedure", "Coverage"} <= reads
    assert "Observation" in reads and "AllergyIntolerance" not in reads
    # The Frontier draft carried the chart to the AI: an audited inference about this patient.
    patient = await stack.pool.fetch(
        "SELECT patient_id, detail FROM audit_events WHERE workflow_id = $1 AND event_type = 'ai-inference'",
        wid,
    )
    assert len(patient) >= 1 and all(r["patient_id"] for r in patient)
    assert {r["patient_id"] for r in patient} <= {
        r["patient_id"]
        for r in await stack.pool.fetch(
            "SELECT patient_id FROM audit_events WHERE workflow_id = $1 AND resource_type = 'Patient'", wid
        )
    }

    [claim] = await stack.pool.fetch(
        "SELECT decision, bundle FROM payer_claims WHERE claim_identifier LIKE $1", f"%|pa-{order_id}"
    )
    assert claim["decision"] == "approved"
    [metrics] = await stack.pool.fetch("SELECT * FROM pa_metrics WHERE workflow_id = $1", wid)
    assert metrics["outcome"] == "approved" and metrics["seconds_to_draft"] > 0
    assert metrics["edit_chars"] > 0 and metrics["payer"] == final.payer

    described = await handle.describe()
    attrs = described.typed_search_attributes
    assert attrs.get(sa.STAGE) == "approved" and attrs.get(sa.PIPELINE) == "prior-auth"
    assert attrs.get(sa.PAYER) == final.payer and attrs.get(sa.TENANT) == TENANT
    memo = await described.memo_value("summary")
    assert memo["stage"] == "approved" and memo["criteria_met"] == "3/3"


async def test_temporal_cli_start_with_plain_json_completes(
    client: Client, stack: Stack, task_queue: str
) -> None:
    order_id = await stack.new_order()
    wid = workflow_id(order_id)
    target = client.service_client.config.target_host
    cli = [str(BIN / "temporal"), "--address", target, "--namespace", client.namespace]

    def run(*args: str) -> None:
        subprocess.run([*cli, *args], check=True, capture_output=True, timeout=60)

    async with worker(client, stack, task_queue):
        plain = json.dumps({"order_id": order_id, "tenant_id": TENANT, "priority": "expedited"})
        await asyncio.to_thread(
            run, "workflow", "start", "--type", "PriorAuthWorkflow", "--task-queue", task_queue,
            "--workflow-id", wid, "--input", plain,
        )  # fmt: skip
        handle = client.get_workflow_handle_for(PriorAuthWorkflow.run, wid)
        s = await awaiting_review(handle)
        assert s.priority == "expedited" and s.document_reference_id
        staff = await stack.pa_staff()
        await asyncio.to_thread(
            run, "workflow", "signal", "--workflow-id", wid, "--name", "reject",
            "--input", json.dumps({"reviewer_id": staff, "comments": "duplicate therapy"}),
        )  # fmt: skip
        out = await handle.result()
    assert out.status.stage == "rejected"
    [task] = await stack.written("Task", wid, "review-task")
    assert task["status"] == "cancelled"
    rejected = await stack.pool.fetchval(
        "SELECT count(*) FROM pa_metrics WHERE workflow_id = $1 AND outcome = 'rejected'", wid
    )
    assert rejected == 1
    # nothing reached the payer: no claim for this order exists there
    assert (
        await stack.pool.fetchval(
            "SELECT count(*) FROM payer_claims WHERE claim_identifier LIKE $1", f"%|pa-{order_id}"
        )
        == 0
    )


async def start_worker(
    queue: str, stack: Stack, marker_dir: Path | None = None
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "CAREFLOW_FHIR_BASE_URL": stack.fhir_base,
        "CAREFLOW_PAYER_BASE_URL": stack.payer_base,
    }
    args = [queue, str(marker_dir)] if marker_dir else [queue]
    return await start_ready("pa_worker", *args, env=env)


async def test_kill_9_mid_write_leaves_one_document_and_one_task(
    client: Client, stack: Stack, task_queue: str, tmp_path: Path
) -> None:
    order_id = await stack.new_order()
    wid = workflow_id(order_id)
    procs = [await start_worker(task_queue, stack, marker_dir=tmp_path)]
    try:
        await start_prior_auth(client, order_id, tenant_id=TENANT, task_queue=task_queue)
        marker = await wait_until(
            lambda: list(tmp_path.glob("task-written-*")), timeout=90, what="the Task write"
        )
        procs.append(await start_worker(task_queue, stack))
        os.kill(int(marker[0].name.rsplit("-", 1)[1]), signal.SIGKILL)  # the step's result is lost
        handle = client.get_workflow_handle_for(PriorAuthWorkflow.run, wid)
        s = await awaiting_review(handle, timeout=120)
        docs = await stack.written("DocumentReference", wid, "draft-document")
        tasks = await stack.written("Task", wid, "review-task")
        assert [d["id"] for d in docs] == [s.document_reference_id]
        assert [t["id"] for t in tasks] == [s.task_id]
        await handle.signal(PriorAuthWorkflow.reject, ReviewAction(reviewer_id=await stack.pa_staff()))
        out = await asyncio.wait_for(handle.result(), timeout=60)
        assert out.status.stage == "rejected"
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()

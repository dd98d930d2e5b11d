"""fhir.* activities against the sandbox: idempotent under retries and new runs, errors mapped to
retryable / non-retryable ApplicationErrors, reads audited with the workflow id."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.fhir import (
    EnsureInput,
    FhirActivities,
    PatientContextInput,
    SearchInput,
    UpdateInput,
    fhir_activities,
    process_fhir_client,
)
from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.fhir.client import FhirClient
from careflow.idempotency import step_identifier
from careflow.net import free_port
from tests.support.fhir_sandbox import sandbox


@pytest_asyncio.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert p is not None
    yield p
    await p.close()


@pytest_asyncio.fixture(scope="module")
async def acts(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[FhirActivities]:
    async with (
        sandbox(database_url) as base,
        FhirClient(base, audit=PostgresAuditTrail(pool), actor="worker-t") as c,
    ):
        yield FhirActivities(c)


def env(workflow_id: str, run_id: str = "run-1", attempt: int = 1) -> ActivityEnvironment:
    e = ActivityEnvironment()
    e.info = dataclasses.replace(e.info, workflow_id=workflow_id, workflow_run_id=run_id, attempt=attempt)
    return e


def task(pid: str = "p-none") -> dict:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": f"Patient/{pid}"},
    }


async def test_ensure_is_keyed_by_workflow_and_step_not_run(acts: FhirActivities) -> None:
    wf = f"prior-auth-{uuid.uuid4().hex[:8]}"
    first = await env(wf, "run-1").run(acts.ensure, EnsureInput(step="review-task", resource=task()))
    retried = await env(wf, "run-1", attempt=2).run(
        acts.ensure, EnsureInput(step="review-task", resource=task())
    )
    reset = await env(wf, "run-2").run(acts.ensure, EnsureInput(step="review-task", resource=task()))
    assert first.created and not retried.created and not reset.created
    assert first.resource["id"] == retried.resource["id"] == reset.resource["id"]
    assert first.identifier == step_identifier(wf, "review-task")
    system, value = first.identifier.split("|")
    assert {"system": system, "value": value} in first.resource["identifier"]

    other_step = await env(wf).run(acts.ensure, EnsureInput(step="reminder-task", resource=task()))
    other_workflow = await env(wf + "-x").run(acts.ensure, EnsureInput(step="review-task", resource=task()))
    assert other_step.created and other_workflow.created
    assert len({first.resource["id"], other_step.resource["id"], other_workflow.resource["id"]}) == 3


async def test_update_retry_after_success_is_not_an_error(acts: FhirActivities) -> None:
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    made = (await env(wf).run(acts.ensure, EnsureInput(step="t", resource=task()))).resource
    desired = {**made, "status": "accepted"}
    inp = UpdateInput(resource=desired, if_match=made["meta"]["versionId"])
    done = await env(wf).run(acts.update, inp)
    again = await env(wf, attempt=2).run(acts.update, inp)  # the first attempt's result was lost
    assert done.resource["meta"]["versionId"] == again.resource["meta"]["versionId"] == "2"

    # Someone else changed it: a stale version is a real conflict, not retried.
    with pytest.raises(ApplicationError) as exc:
        await env(wf).run(acts.update, UpdateInput(resource={**made, "status": "rejected"}, if_match="1"))
    assert exc.value.non_retryable and exc.value.type == "FhirPreconditionFailed"


async def test_bad_requests_are_non_retryable(acts: FhirActivities) -> None:
    with pytest.raises(ApplicationError) as exc:
        await env("wf-bad").run(
            acts.search, SearchInput(resource_type="Observation", params={"nonsense": "1"})
        )
    assert exc.value.non_retryable and exc.value.type == "FhirOperationError"
    assert "nonsense" in str(exc.value)  # the parameter name, never a value
    with pytest.raises(ApplicationError) as exc:
        await env("wf-bad").run(acts.ensure, EnsureInput(step="s", resource={"resourceType": "Task"}))
    assert exc.value.non_retryable and exc.value.type == "FhirValidationError"


async def test_unavailable_server_is_retryable(pool: asyncpg.Pool) -> None:
    dead = FhirClient(
        f"http://127.0.0.1:{free_port()}/fhir",
        audit=PostgresAuditTrail(pool),
        actor="worker-t",
        backoff_base=0.01,
    )
    async with dead:
        with pytest.raises(ApplicationError) as exc:
            await env("wf-down").run(
                FhirActivities(dead).search, SearchInput(resource_type="Patient", params={})
            )
    assert not exc.value.non_retryable and exc.value.type == "FhirUnavailable"


async def test_patient_context_is_audited_with_the_workflow(acts: FhirActivities, pool: asyncpg.Pool) -> None:
    wf = f"lab-alert-{uuid.uuid4().hex[:8]}"
    patient = await env(wf).run(
        acts.ensure, EnsureInput(step="patient", resource={"resourceType": "Patient"})
    )
    pid = patient.resource["id"]
    out = await env(wf).run(
        acts.patient_context,
        PatientContextInput(patient_id=pid, resource_types=["Patient", "Observation"],
                            params={"Observation": {"category": "laboratory"}}),
    )  # fmt: skip
    assert out.resources["Patient"][0]["id"] == pid and out.resources["Observation"] == []
    rows = await pool.fetch("SELECT * FROM audit_events WHERE request_id = $1", out.request_id)
    assert sorted(r["resource_type"] for r in rows) == ["Observation", "Patient"]
    assert {r["workflow_id"] for r in rows} == {wf} and {r["patient_id"] for r in rows} == {pid}


async def test_registry_builds_one_client_per_process(database_url: str, pool: asyncpg.Pool) -> None:
    settings = Settings()
    defs = fhir_activities(settings, pool, "worker-x")
    names = [getattr(d, "__temporal_activity_definition").name for d in defs]
    assert names == ["fhir.patient_context", "fhir.read", "fhir.search", "fhir.ensure", "fhir.update"]
    assert process_fhir_client(settings, pool, "worker-x") is process_fhir_client(settings, pool, "worker-x")
    await process_fhir_client(settings, pool, "worker-x").aclose()

"""fhir.* activities: careflow's FHIR client exposed to workflows, idempotent under retries.

- `fhir.patient_context`, `fhir.read`, `fhir.search`: reads (each read is audited by the client);
- `fhir.ensure`: a conditional create keyed by an identifier derived from the workflow id and a step
  name (`https://careflow.dev/fhir/sid/workflow-step|<workflow id>/<step>`), never the run id, so a
  retried activity, a retried workflow task or a reset finds the resource its first attempt made;
- `fhir.update`: a versioned update; when a retry finds its own earlier write already applied (412 but
  the current content is what was asked for), it returns that instead of failing.

Errors: a refused request (4xx, invalid resource, auth) is a non-retryable ApplicationError of the
client's error type; an unavailable server is retryable (with the server's Retry-After as the next
delay).  Messages carry status and issue codes only (Temporal failures are not encrypted).

Patient context can be large: ask only for the types (and `params`, e.g. a date window) a step needs;
Temporal payloads warn at 256 KB.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.fhir.auth import token_provider
from careflow.fhir.client import (
    FhirClient,
    FhirError,
    FhirPreconditionFailed,
    FhirProtocolError,
    FhirUnavailable,
)
from careflow.idempotency import step_identifier


class PatientContextInput(BaseModel):
    patient_id: str
    resource_types: list[str]
    # Extra search parameters per type, e.g. {"Observation": {"category": "laboratory"}}.
    params: dict[str, dict[str, str]] = Field(default_factory=dict)


class PatientContextOutput(BaseModel):
    resources: dict[str, list[dict[str, Any]]]
    request_id: str  # the audit events' request id: cite it with the inference that uses this context


class ReadInput(BaseModel):
    resource_type: str
    id: str


class SearchInput(BaseModel):
    resource_type: str
    params: dict[str, str]


class ResourceOutput(BaseModel):
    resource: dict[str, Any]


class SearchOutput(BaseModel):
    resources: list[dict[str, Any]]


class EnsureInput(BaseModel):
    step: str  # unique within the workflow, e.g. "review-task" or "alert-task-level-2"
    resource: dict[str, Any]


class EnsureOutput(BaseModel):
    resource: dict[str, Any]
    created: bool  # False: an earlier attempt (or run) of this step had created it
    identifier: str


class UpdateInput(BaseModel):
    resource: dict[str, Any]
    if_match: str | None = None


def _strip_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


def application_error(exc: FhirError) -> ApplicationError:
    if isinstance(exc, FhirUnavailable | FhirProtocolError):
        delay = getattr(exc, "retry_after", None)
        return ApplicationError(
            str(exc),
            type=type(exc).__name__,
            next_retry_delay=timedelta(seconds=delay) if delay else None,
        )
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


class FhirActivities:
    """Built once per worker process around that process's FhirClient."""

    def __init__(self, client: FhirClient) -> None:
        self._fhir = client

    def all(self) -> list[Callable[..., Any]]:
        return [self.patient_context, self.read, self.search, self.ensure, self.update]

    @activity.defn(name="fhir.patient_context")
    async def patient_context(self, inp: PatientContextInput) -> PatientContextOutput:
        info = activity.info()
        request_id = f"{info.workflow_id}/{info.activity_id}"
        try:
            resources = await self._fhir.patient_context(
                inp.patient_id,
                inp.resource_types,
                params=inp.params,
                request_id=request_id,
                workflow_id=info.workflow_id,
            )
        except FhirError as exc:
            raise application_error(exc) from None
        return PatientContextOutput(resources=resources, request_id=request_id)

    @activity.defn(name="fhir.read")
    async def read(self, inp: ReadInput) -> ResourceOutput:
        try:
            resource = await self._fhir.read(
                inp.resource_type, inp.id, workflow_id=activity.info().workflow_id
            )
        except FhirError as exc:
            raise application_error(exc) from None
        return ResourceOutput(resource=resource)

    @activity.defn(name="fhir.search")
    async def search(self, inp: SearchInput) -> SearchOutput:
        try:
            found = await self._fhir.search(
                inp.resource_type, inp.params, workflow_id=activity.info().workflow_id
            )
        except FhirError as exc:
            raise application_error(exc) from None
        return SearchOutput(resources=found)

    @activity.defn(name="fhir.ensure")
    async def ensure(self, inp: EnsureInput) -> EnsureOutput:
        workflow_id = activity.info().workflow_id
        if not workflow_id:
            raise ApplicationError("fhir.ensure needs a workflow id to key its resource", non_retryable=True)
        identifier = step_identifier(workflow_id, inp.step)
        try:
            resource, created = await self._fhir.conditional_create(
                inp.resource, identifier, workflow_id=workflow_id
            )
        except FhirError as exc:
            raise application_error(exc) from None
        return EnsureOutput(resource=resource, created=created, identifier=identifier)

    @activity.defn(name="fhir.update")
    async def update(self, inp: UpdateInput) -> ResourceOutput:
        workflow_id = activity.info().workflow_id
        try:
            try:
                return ResourceOutput(
                    resource=await self._fhir.update(inp.resource, inp.if_match, workflow_id=workflow_id)
                )
            except FhirPreconditionFailed:
                # A retry after our own write succeeded sees a newer version: is it ours?
                current = await self._fhir.read(
                    str(inp.resource["resourceType"]), str(inp.resource["id"]), workflow_id=workflow_id
                )
                if _strip_server_meta(current) == _strip_server_meta(inp.resource):
                    return ResourceOutput(resource=current)
                raise
        except FhirError as exc:
            raise application_error(exc) from None


_CLIENTS: dict[tuple[str, str, int], FhirClient] = {}


def process_fhir_client(settings: Settings, pool: asyncpg.Pool, identity: str) -> FhirClient:
    """The worker process's one FhirClient (shared by every activity class that needs one): the EHR at
    `settings.fhir_base_url`, audited into the Postgres trail as the worker identity."""
    key = (settings.fhir_base_url, identity, id(pool))
    if key not in _CLIENTS:
        _CLIENTS[key] = FhirClient(
            settings.fhir_base_url,
            audit=PostgresAuditTrail(pool),
            actor=identity,
            token=token_provider(settings),
            # Temporal owns retries (workflows/retry_rules.py): one HTTP attempt per activity attempt,
            # and a 429/503's Retry-After becomes the next retry's delay (application_error).
            max_attempts=1,
        )
    return _CLIENTS[key]


def fhir_activities(settings: Settings, pool: asyncpg.Pool, identity: str) -> list[Callable[..., Any]]:
    return FhirActivities(process_fhir_client(settings, pool, identity)).all()

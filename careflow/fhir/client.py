"""Async FHIR R4 client (httpx) for any FHIR server: Epic, Cerner, HAPI, careflow's sandbox.

Resources travel as plain JSON dicts, checked against fhir.resources' R4B models on the way out and on
the way in, so what a server sends (profiles, extensions, contained resources) reaches the caller as it
was sent.

Failures:
- timeouts, transport errors, 5xx and 429 are retried (`max_attempts` in all, exponential backoff with
  jitter, at least `Retry-After` when the server sends one); then `FhirUnavailable`.  A request that is
  not idempotent (a plain create, a transaction with plain creates) is retried only when it cannot have
  been processed (connection refused, 429, 503), never after a read timeout;
- any other 4xx raises `FhirOperationError` (`FhirNotFound` for 404/410, `FhirPreconditionFailed` for
  409/412) carrying the server's OperationOutcome, without retrying;
- an outgoing resource that is not valid R4 raises `FhirValidationError` before anything is sent.

Every call that reads or writes patient data records exactly one AuditEvent (retries and pages
included) through the AuditSink: PHI_ACCESS for read/vread/search, PHI_WRITE for create/update/
transaction, outcome failure when the call failed.  Audit rows, logs and exception messages carry ids,
resource types, parameter *names*, status codes and issue codes: never values.  Each request carries
`X-Request-ID` (the audit event's request_id; `patient_context` uses one id for all of its reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import httpx

from careflow.audit.sink import AuditSink
from careflow.fhir import search
from careflow.fhir.auth import FhirAuthError, StaticToken, TokenProvider, TokenUnavailable
from careflow.fhir.errors import (
    FhirError,
    FhirNotFound,
    FhirOperationError,
    FhirPreconditionFailed,
    FhirProtocolError,
    FhirUnavailable,
    FhirValidationError,
    error_for_status,
)
from careflow.fhir.outcome import Issue, operation_outcome
from careflow.fhir.resources import FHIR_JSON, InvalidResource, dumps, split_reference, validate_resource
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType, AuditOutcome
from careflow.security.logging import get_logger

__all__ = [
    "FhirAuthError",
    "FhirClient",
    "FhirError",
    "FhirNotFound",
    "FhirOperationError",
    "FhirPreconditionFailed",
    "FhirProtocolError",
    "FhirUnavailable",
    "FhirValidationError",
    "StaticToken",
    "TokenProvider",
]

log = get_logger("careflow.fhir.client")
MAX_PAGES = 1000


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass
class _Audit:
    """The one audit event of a client call, filled in as the call learns its facts."""

    event_type: AuditEventType
    action: AuditAction
    resource_type: str | None
    resource_id: str | None
    request_id: str
    workflow_id: str | None
    patient_id: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


def _patient_of(resource: Mapping[str, Any]) -> str | None:
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    element = search.patient_element(str(rtype)) if isinstance(rtype, str) else None
    value = resource.get(element) if element else None
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Mapping) and isinstance(value.get("reference"), str):
        ref = split_reference(value["reference"])
        if ref and ref[0] == "Patient":
            return ref[1]
    return None


def _patient_of_search(resource_type: str, params: Mapping[str, Any]) -> str | None:
    for key in ("patient", "subject") if resource_type != "Patient" else ("_id",):
        raw = params.get(key)
        if isinstance(raw, str) and raw and "," not in raw:
            if "/" not in raw:
                return raw
            ref = split_reference(raw)
            if ref and ref[0] == "Patient":
                return ref[1]
    return None


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _as_version(if_match: str | None) -> str | None:
    if if_match is None:
        return None
    v = if_match.strip()
    return v if v.startswith('W/"') else f'W/"{v.strip(chr(34))}"'


# -- the client -------------------------------------------------------------------------------------------
class FhirClient:
    """One per process: it holds a pooled HTTP connection set.  Use as an async context manager, or call
    `aclose()` when done."""

    def __init__(
        self,
        base_url: str,
        *,
        audit: AuditSink,
        actor: str,
        token: TokenProvider | None = None,
        timeout: float = 10.0,
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        max_retry_after: float = 30.0,
        validate: bool = True,
        actor_type: str = "service",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._origin = urlsplit(self.base_url)[:2]
        self._audit = audit
        self._actor = actor
        self._actor_type = actor_type
        self._token = token
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._validate = validate
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/",
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"Accept": FHIR_JSON},
        )

    async def __aenter__(self) -> FhirClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- interactions ----------------------------------------------------------------------------------
    async def read(
        self, resource_type: str, id: str, *, request_id: str | None = None, workflow_id: str | None = None
    ) -> dict[str, Any]:
        async with self._audited(
            AuditEventType.PHI_ACCESS, AuditAction.READ, resource_type, id, request_id, workflow_id
        ) as ev:
            resp = await self._send("GET", f"{resource_type}/{quote(id)}", ev, interaction="read")
            resource = self._resource(resp, resource_type)
            ev.patient_id = _patient_of(resource)
            return resource

    async def vread(
        self,
        resource_type: str,
        id: str,
        version_id: str,
        *,
        request_id: str | None = None,
        workflow_id: str | None = None,
    ) -> dict[str, Any]:
        async with self._audited(
            AuditEventType.PHI_ACCESS, AuditAction.READ, resource_type, id, request_id, workflow_id
        ) as ev:
            ev.detail["version"] = str(version_id)
            path = f"{resource_type}/{quote(id)}/_history/{quote(str(version_id))}"
            resp = await self._send("GET", path, ev, interaction="vread")
            resource = self._resource(resp, resource_type)
            ev.patient_id = _patient_of(resource)
            return resource

    async def search(
        self,
        resource_type: str,
        params: Mapping[str, str | Sequence[str]],
        *,
        request_id: str | None = None,
        workflow_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every match, following `next` links page by page (one audit event for the whole search)."""
        items = [(k, v) for k, vs in params.items() for v in ([vs] if isinstance(vs, str) else vs)]
        async with self._audited(
            AuditEventType.PHI_ACCESS, AuditAction.READ, resource_type, None, request_id, workflow_id
        ) as ev:
            ev.patient_id = _patient_of_search(resource_type, params)
            ev.detail["params"] = ",".join(sorted({k for k, _ in items}))
            results: list[dict[str, Any]] = []
            url: str | None = f"{resource_type}?{urlencode(items)}" if items else resource_type
            pages = 0
            while url is not None:
                pages += 1
                if pages > MAX_PAGES:
                    raise FhirProtocolError(f"search of {resource_type} did not end after {MAX_PAGES} pages")
                resp = await self._send("GET", url, ev, interaction="search")
                bundle = self._json(resp, "Bundle")
                for entry in bundle.get("entry") or []:
                    mode = (entry.get("search") or {}).get("mode", "match")
                    if mode == "match" and isinstance(entry.get("resource"), dict):
                        results.append(self._checked(entry["resource"], resource_type))
                url = self._next_link(bundle)
            ev.detail["results"] = str(len(results))
            ev.detail["pages"] = str(pages)
            if ev.patient_id is None:
                patients = {_patient_of(r) for r in results}
                if len(patients) == 1:
                    ev.patient_id = patients.pop()
            return results

    async def create(
        self, resource: dict[str, Any], *, request_id: str | None = None, workflow_id: str | None = None
    ) -> dict[str, Any]:
        rtype = self._outgoing(resource)
        async with self._audited(
            AuditEventType.PHI_WRITE, AuditAction.CREATE, rtype, None, request_id, workflow_id
        ) as ev:
            ev.patient_id = _patient_of(resource)
            resp = await self._send("POST", rtype, ev, interaction="create", body=resource, idempotent=False)
            created = await self._written(resp, rtype, ev)
            ev.resource_id = created.get("id")
            ev.patient_id = _patient_of(created)
            return created

    async def conditional_create(
        self,
        resource: dict[str, Any],
        identifier: str,
        *,
        request_id: str | None = None,
        workflow_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create unless a resource with `identifier` (`system|value`) exists; (resource, created).

        The identifier is added to the resource when missing, so the next call finds what this one made.
        """
        system, sep, value = identifier.partition("|")
        if not sep or not value:
            raise ValueError("identifier must be 'system|value'")
        resource = self._with_identifier(resource, system, value)
        rtype = self._outgoing(resource)
        criteria = urlencode({"identifier": identifier})
        async with self._audited(
            AuditEventType.PHI_WRITE, AuditAction.CREATE, rtype, None, request_id, workflow_id
        ) as ev:
            ev.patient_id = _patient_of(resource)
            resp = await self._send(
                "POST",
                rtype,
                ev,
                interaction="conditional create",
                body=resource,
                headers={"If-None-Exist": criteria},
            )
            result = await self._written(resp, rtype, ev)
            created = resp.status_code == 201
            ev.resource_id = result.get("id")
            ev.patient_id = _patient_of(result)
            ev.detail["created"] = str(created).lower()
            return result, created

    async def update(
        self,
        resource: dict[str, Any],
        if_match: str | None = None,
        *,
        request_id: str | None = None,
        workflow_id: str | None = None,
    ) -> dict[str, Any]:
        """PUT the resource (it must carry its id); `if_match` (`3` or `W/"3"`) makes it a versioned
        update that fails with FhirPreconditionFailed when someone else wrote in between."""
        rtype = self._outgoing(resource)
        rid = resource.get("id")
        if not isinstance(rid, str) or not rid:
            raise FhirValidationError(
                [Issue("required", "an update needs the resource id", (f"{rtype}.id",))]
            )
        headers = {"If-Match": v} if (v := _as_version(if_match)) else {}
        async with self._audited(
            AuditEventType.PHI_WRITE, AuditAction.UPDATE, rtype, rid, request_id, workflow_id
        ) as ev:
            ev.patient_id = _patient_of(resource)
            resp = await self._send(
                "PUT", f"{rtype}/{quote(rid)}", ev, interaction="update", body=resource, headers=headers
            )
            updated = await self._written(resp, rtype, ev)
            ev.patient_id = _patient_of(updated)
            return updated

    async def transaction(
        self, bundle: dict[str, Any], *, request_id: str | None = None, workflow_id: str | None = None
    ) -> dict[str, Any]:
        """POST a transaction (or batch) Bundle to the base; returns the response Bundle."""
        self._outgoing(bundle)
        if bundle.get("type") not in ("transaction", "batch"):
            raise FhirValidationError(
                [Issue("value", "Bundle.type must be transaction or batch", ("Bundle.type",))]
            )
        entries = [e for e in bundle.get("entry") or [] if isinstance(e, Mapping)]
        methods = {str((e.get("request") or {}).get("method")) for e in entries}
        # Idempotent when every entry is: conditional creates, PUT, DELETE, GET.
        idempotent = all(
            (e.get("request") or {}).get("method") != "POST" or (e.get("request") or {}).get("ifNoneExist")
            for e in entries
        )
        action = {frozenset({"POST"}): AuditAction.CREATE, frozenset({"PUT"}): AuditAction.UPDATE}.get(
            frozenset(methods), AuditAction.EXECUTE
        )
        async with self._audited(
            AuditEventType.PHI_WRITE, action, "Bundle", None, request_id, workflow_id
        ) as ev:
            ev.detail["entries"] = str(len(entries))
            ev.detail["type"] = str(bundle.get("type"))
            resp = await self._send(
                "POST", "", ev, interaction="transaction", body=bundle, idempotent=idempotent
            )
            result = self._json(resp, "Bundle")
            # The bundle's patient: its Patient entries (ids from the response) and the Patient/id
            # references of the other entries; named in the audit event when there is exactly one.
            patients = {
                p
                for e in entries
                if isinstance(e.get("resource"), Mapping) and (p := _patient_of(e["resource"]))
            }
            for e in result.get("entry") or []:
                ref = split_reference(str((e.get("response") or {}).get("location", "")))
                if ref and ref[0] == "Patient":
                    patients.add(ref[1])
            if len(patients) == 1:
                ev.patient_id = patients.pop()
            return result

    async def patient_context(
        self,
        patient_id: str,
        resource_types: Iterable[str],
        *,
        params: Mapping[str, Mapping[str, str | Sequence[str]]] | None = None,
        request_id: str | None = None,
        workflow_id: str | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """The patient's resources of exactly the requested types (minimum necessary), read concurrently.

        `Patient` is a read of the patient; any other type is a search by `patient` (plus `params[type]`,
        e.g. `{"Observation": {"category": "laboratory", "date": "ge2025-01-01"}}`).  All reads share one
        request id, so the audit trail ties them together (and to the AI inference that used them).
        """
        types = list(dict.fromkeys(resource_types))
        request_id = request_id or new_request_id()
        extra = params or {}

        async def fetch(rtype: str) -> list[dict[str, Any]]:
            if rtype == "Patient":
                return [
                    await self.read("Patient", patient_id, request_id=request_id, workflow_id=workflow_id)
                ]
            query = {**extra.get(rtype, {}), "patient": patient_id}
            return await self.search(rtype, query, request_id=request_id, workflow_id=workflow_id)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = {rtype: group.create_task(fetch(rtype)) for rtype in types}
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None
        return {rtype: task.result() for rtype, task in tasks.items()}

    # -- plumbing ---------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _audited(
        self,
        event_type: AuditEventType,
        action: AuditAction,
        resource_type: str | None,
        resource_id: str | None,
        request_id: str | None,
        workflow_id: str | None,
    ) -> AsyncIterator[_Audit]:
        ev = _Audit(
            event_type, action, resource_type, resource_id, request_id or new_request_id(), workflow_id
        )
        try:
            yield ev
        except Exception as exc:
            ev.detail["error"] = type(exc).__name__
            if isinstance(exc, FhirOperationError | FhirUnavailable) and exc.status is not None:
                ev.detail["status"] = str(exc.status)
            await self._record(ev, AuditOutcome.FAILURE)
            raise
        await self._record(ev, AuditOutcome.SUCCESS)

    async def _record(self, ev: _Audit, outcome: AuditOutcome) -> None:
        await self._audit.record(
            AuditEvent(
                event_type=ev.event_type,
                actor=self._actor,
                actor_type=self._actor_type,
                action=ev.action,
                outcome=outcome,
                patient_id=ev.patient_id,
                resource_type=ev.resource_type,
                resource_id=ev.resource_id,
                request_id=ev.request_id,
                workflow_id=ev.workflow_id,
                detail=ev.detail,
            )
        )

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret

    async def _send(
        self,
        method: str,
        url: str,
        ev: _Audit,
        *,
        interaction: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """One request with retries; returns a response < 400, raises FhirOperationError/FhirUnavailable."""
        content = dumps(body).encode() if body is not None else None
        base_headers = {"X-Request-ID": ev.request_id, **(headers or {})}
        if body is not None:
            base_headers["Content-Type"] = FHIR_JSON
            base_headers.setdefault("Prefer", "return=representation")
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            started = time.perf_counter()
            status: int | None = None
            retry_after: float | None = None
            try:
                req_headers = dict(base_headers)
                if self._token is not None:
                    req_headers["Authorization"] = f"Bearer {await self._token.token()}"
                resp = await self._http.request(method, url, content=content, headers=req_headers)
            except (httpx.TransportError, TokenUnavailable) as exc:
                unsent = isinstance(
                    exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | TokenUnavailable
                )
                problem = type(exc).__name__
                if not idempotent and not unsent:
                    self._log_failure(interaction, ev, attempt, problem, None)
                    raise FhirUnavailable(
                        f"FHIR {interaction}: {problem}; not retried, the server may have processed it",
                        attempts=attempt,
                    ) from None
            else:
                status = resp.status_code
                log.debug(
                    "fhir request",
                    interaction=interaction,
                    resource_type=ev.resource_type,
                    status=status,
                    attempt=attempt,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                    request_id=ev.request_id,
                )
                if status == 401 and self._token is not None and not refreshed:
                    refreshed = True  # a stale token: fetch a fresh one, once, without spending an attempt
                    self._token.invalidate()
                    attempt -= 1
                    continue
                if status < 400:
                    return resp
                if status != 429 and status < 500:
                    raise self._operation_error(resp, interaction)
                problem = f"HTTP {status}"
                retry_after = _retry_after(resp)
                if not idempotent and status not in (429, 503):
                    self._log_failure(interaction, ev, attempt, problem, status)
                    raise FhirUnavailable(
                        f"FHIR {interaction} answered {status}; not retried, it may have been processed",
                        attempts=attempt,
                        status=status,
                    )
            if attempt >= self._max_attempts:
                self._log_failure(interaction, ev, attempt, problem, status)
                raise FhirUnavailable(
                    f"FHIR {interaction} failed after {attempt} attempts ({problem})",
                    attempts=attempt,
                    status=status,
                    retry_after=retry_after,
                )
            delay = self._backoff(attempt)
            if retry_after is not None:
                if retry_after > self._max_retry_after:
                    self._log_failure(interaction, ev, attempt, problem, status)
                    raise FhirUnavailable(
                        f"FHIR {interaction} answered {status} with Retry-After {retry_after:.0f}s",
                        attempts=attempt,
                        status=status,
                        retry_after=retry_after,
                    )
                delay = max(delay, retry_after)
            log.warning(
                "fhir request retry",
                interaction=interaction,
                resource_type=ev.resource_type,
                problem=problem,
                attempt=attempt,
                delay_s=round(delay, 3),
                request_id=ev.request_id,
            )
            await asyncio.sleep(delay)

    def _log_failure(
        self, interaction: str, ev: _Audit, attempt: int, problem: str, status: int | None
    ) -> None:
        log.warning(
            "fhir request failed",
            interaction=interaction,
            resource_type=ev.resource_type,
            problem=problem,
            status=status,
            attempts=attempt,
            request_id=ev.request_id,
        )

    def _operation_error(self, resp: httpx.Response, interaction: str) -> FhirOperationError:
        outcome: dict[str, Any] | None = None
        try:
            body = resp.json()
            if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
                outcome = body
        except ValueError:
            pass
        if outcome is None:
            outcome = operation_outcome(
                [Issue("processing", f"HTTP {resp.status_code} without an OperationOutcome")]
            )
        return error_for_status(resp.status_code, outcome, interaction)

    def _json(self, resp: httpx.Response, expected_type: str | None) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            raise FhirProtocolError(
                f"FHIR server answered {resp.status_code} with a body that is not JSON"
            ) from None
        if not isinstance(body, dict) or (expected_type and body.get("resourceType") != expected_type):
            got = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
            raise FhirProtocolError(f"expected a {expected_type}, the FHIR server answered {got}")
        return body

    def _checked(self, resource: dict[str, Any], expected_type: str | None) -> dict[str, Any]:
        if self._validate:
            try:
                validate_resource(resource, expected_type=expected_type)
            except InvalidResource as exc:
                raise FhirProtocolError(f"the FHIR server sent an invalid resource: {exc}") from None
        return resource

    def _resource(self, resp: httpx.Response, expected_type: str) -> dict[str, Any]:
        return self._checked(self._json(resp, expected_type), expected_type)

    async def _written(self, resp: httpx.Response, rtype: str, ev: _Audit) -> dict[str, Any]:
        """The resource a create/update answered with; if the server sent none, read its Location."""
        if resp.content.strip():
            return self._resource(resp, rtype)
        location = resp.headers.get("location") or resp.headers.get("content-location")
        if not location:
            raise FhirProtocolError("the FHIR server answered a write with neither a resource nor a Location")
        ref = split_reference(location)
        if ref is None:
            raise FhirProtocolError("the FHIR server's Location does not name a resource")
        follow = await self._send("GET", f"{ref[0]}/{quote(ref[1])}", ev, interaction="read")
        return self._resource(follow, rtype)

    def _outgoing(self, resource: Any) -> str:
        try:
            return validate_resource(resource)
        except InvalidResource as exc:
            raise FhirValidationError(exc.issues) from None

    @staticmethod
    def _with_identifier(resource: dict[str, Any], system: str, value: str) -> dict[str, Any]:
        idents = resource.get("identifier")
        idents = idents if isinstance(idents, list) else []
        if any(
            isinstance(i, Mapping) and i.get("system") == system and i.get("value") == value for i in idents
        ):
            return resource
        return {**resource, "identifier": [*idents, {"system": system, "value": value}]}

    def _next_link(self, bundle: Mapping[str, Any]) -> str | None:
        for link in bundle.get("link") or []:
            if (
                isinstance(link, Mapping)
                and link.get("relation") == "next"
                and isinstance(link.get("url"), str)
            ):
                url = urljoin(self.base_url + "/", link["url"])
                if urlsplit(url)[:2] != self._origin:
                    # Never send the bearer token (or the query) to another host.
                    raise FhirProtocolError("the FHIR server's next link points to another origin")
                return url
        return None

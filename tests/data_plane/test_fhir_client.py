"""The FHIR client against the sandbox EHR (real HTTP, real Postgres, the real audit trail), and against a
local FHIR server that misbehaves on purpose (503, 429 + Retry-After, slow answers, 4xx, SMART auth).
Ends with the PHI canary: a patient named with a unique string goes through the client, the sandbox and
their logs, and the string appears in no log line and no audit row."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request, Response

from careflow.audit.trail import PostgresAuditTrail
from careflow.fhir.auth import SmartBackendServices, StaticToken
from careflow.fhir.client import (
    FhirClient,
    FhirNotFound,
    FhirOperationError,
    FhirPreconditionFailed,
    FhirProtocolError,
    FhirUnavailable,
    FhirValidationError,
)
from careflow.net import free_port
from careflow.security.logging import configure_logging, get_logger
from tests.support.fhir_sandbox import sandbox, serve

FHIR = "application/fhir+json"


@pytest_asyncio.fixture(scope="module")
async def base(database_url: str) -> AsyncIterator[str]:
    async with sandbox(database_url) as url:
        yield url


@pytest_asyncio.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert p is not None
    yield p
    await p.close()


@pytest.fixture
def actor() -> str:
    return f"svc-test-{uuid.uuid4().hex[:10]}"


async def audit_rows(pool: asyncpg.Pool, actor: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM audit_events WHERE actor = $1 ORDER BY id", actor)


def summary(rows: list[asyncpg.Record]) -> list[tuple[str, str, str, str | None]]:
    return [(r["event_type"], r["action"], r["outcome"], r["resource_type"]) for r in rows]


# -- against the sandbox ------------------------------------------------------------------------------------
def observation(pid: str, code: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": 1.2, "unit": "mg/dL"},
    }


async def test_each_interaction_records_exactly_one_audit_event(
    base: str, pool: asyncpg.Pool, actor: str
) -> None:
    async with FhirClient(base, audit=PostgresAuditTrail(pool), actor=actor) as fhir:
        patient = await fhir.create({"resourceType": "Patient", "gender": "female"})
        pid = patient["id"]
        assert patient["meta"]["versionId"] == "1"
        assert (await fhir.read("Patient", pid)) == patient

        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": observation(pid, "2160-0", f"2024-0{m}-01"),
                    "request": {"method": "POST", "url": "Observation"},
                }
                for m in range(1, 6)
            ],
        }
        response = await fhir.transaction(bundle)
        assert [e["response"]["status"] for e in response["entry"]] == ["201 Created"] * 5

        # Five matches, two per page: three pages, one event.
        found = await fhir.search("Observation", {"patient": pid, "_count": "2", "_sort": "date"})
        assert [o["effectiveDateTime"] for o in found] == [f"2024-0{m}-01" for m in range(1, 6)]

        ident = f"urn:test:order|{uuid.uuid4().hex}"
        task = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "for": {"reference": f"Patient/{pid}"},
        }
        first, created = await fhir.conditional_create(task, ident)
        again, created_again = await fhir.conditional_create(task, ident)
        assert created and not created_again and first["id"] == again["id"]
        assert {"system": "urn:test:order", "value": ident.split("|")[1]} in first["identifier"]

        updated = await fhir.update({**patient, "active": True}, if_match=patient["meta"]["versionId"])
        assert updated["meta"]["versionId"] == "2"
        with pytest.raises(FhirPreconditionFailed) as stale:
            await fhir.update({**patient, "active": False}, if_match='W/"1"')
        assert stale.value.status == 412 and stale.value.outcome["resourceType"] == "OperationOutcome"
        assert (await fhir.vread("Patient", pid, "1"))["gender"] == "female"
        with pytest.raises(FhirNotFound):
            await fhir.read("Patient", f"missing-{uuid.uuid4().hex[:8]}")

    rows = await audit_rows(pool, actor)
    assert summary(rows) == [
        ("phi-write", "C", "success", "Patient"),
        ("phi-access", "R", "success", "Patient"),
        ("phi-write", "C", "success", "Bundle"),
        ("phi-access", "R", "success", "Observation"),
        ("phi-write", "C", "success", "Task"),
        ("phi-write", "C", "success", "Task"),
        ("phi-write", "U", "success", "Patient"),
        ("phi-write", "U", "failure", "Patient"),
        ("phi-access", "R", "success", "Patient"),
        ("phi-access", "R", "failure", "Patient"),
    ]
    assert [r["patient_id"] for r in rows[:-1]] == [pid] * 9
    assert rows[0]["resource_id"] == pid and rows[4]["resource_id"] == first["id"]
    assert json.loads(rows[3]["detail"]) == {"params": "_count,_sort,patient", "results": "5", "pages": "3"}
    assert (
        json.loads(rows[4]["detail"])["created"] == "true"
        and json.loads(rows[5]["detail"])["created"] == "false"
    )
    assert json.loads(rows[7]["detail"])["status"] == "412"
    assert len({r["request_id"] for r in rows}) == len(rows)


async def test_patient_context_reads_only_the_requested_types_concurrently(
    base: str, pool: asyncpg.Pool, actor: str
) -> None:
    async with FhirClient(base, audit=PostgresAuditTrail(pool), actor=actor) as fhir:
        pid = (await fhir.create({"resourceType": "Patient"}))["id"]
        subject = {"reference": f"Patient/{pid}"}
        code = {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]}
        for resource in (
            {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": subject},
            {"resourceType": "Condition", "code": code, "subject": subject},
            {"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": subject,
             "medicationCodeableConcept": {"text": "amlodipine"}},
            {"resourceType": "Procedure", "status": "completed", "subject": subject, "code": code},
            {"resourceType": "AllergyIntolerance", "patient": subject},  # not asked for: must not be read
            observation(pid, "2160-0", "2024-01-01"),
        ):  # fmt: skip
            await fhir.create(resource)
        before = len(await audit_rows(pool, actor))
        wanted = ["Patient", "Encounter", "Condition", "MedicationRequest", "Procedure"]
        context = await fhir.patient_context(pid, wanted, request_id="ctx-" + actor)
    assert list(context) == wanted
    assert [len(v) for v in context.values()] == [1, 1, 1, 1, 1]
    assert context["Patient"][0]["id"] == pid
    reads = (await audit_rows(pool, actor))[before:]
    assert sorted(r["resource_type"] for r in reads) == sorted(wanted)
    assert {r["request_id"] for r in reads} == {"ctx-" + actor}
    assert {r["patient_id"] for r in reads} == {pid}
    assert {r["event_type"] for r in reads} == {"phi-access"}


# -- a FHIR server that misbehaves on purpose ------------------------------------------------------------
@dataclass
class Flaky:
    """Scenario name -> hits; the app answers by scenario (the first path segment after /s/)."""

    root: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    headers: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    public_key: Any = None
    tokens: list[str] = field(default_factory=list)

    def base(self, scenario: str) -> str:
        return f"{self.root}/s/{scenario}-{uuid.uuid4().hex[:6]}"


def patient_json(rid: str = "p1") -> Response:
    return Response(json.dumps({"resourceType": "Patient", "id": rid}), media_type=FHIR)


def searchset(resources: list[dict[str, Any]], next_url: str | None = None) -> Response:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return Response(json.dumps(bundle), media_type=FHIR)


def outcome(status: int, code: str) -> Response:
    issue = {"severity": "error", "code": code, "diagnostics": "DIAGNOSTIC-TEXT"}
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return Response(json.dumps(body), status_code=status, media_type=FHIR)


def flaky_app(state: Flaky) -> FastAPI:
    app = FastAPI()

    @app.api_route("/s/{scenario}/{rest:path}", methods=["GET", "POST", "PUT"])
    async def handle(request: Request, scenario: str, rest: str) -> Response:
        kind = scenario.rsplit("-", 1)[0]
        state.hits[scenario] += 1
        n = state.hits[scenario]
        state.headers.setdefault(scenario, []).append(dict(request.headers))
        if kind == "503x2":
            if n <= 2:
                return Response(status_code=503)
            return patient_json() if "/" in rest else searchset([{"resourceType": "Patient", "id": "p1"}])
        if kind == "429":
            return Response(status_code=429, headers={"Retry-After": "1"}) if n == 1 else patient_json()
        if kind == "429-long":
            return Response(status_code=429, headers={"Retry-After": "3600"})
        if kind == "slow-first":
            if n == 1:
                await asyncio.sleep(2)
            return patient_json()
        if kind == "slow":
            await asyncio.sleep(0.4)
            return patient_json(rest.split("/")[1]) if rest.startswith("Patient/") else searchset([])
        if kind == "down":
            return Response(status_code=503)
        if kind == "400":
            return outcome(400, "invalid")
        if kind == "404":
            return outcome(404, "not-found")
        if kind == "html":
            return Response("<html>proxy error</html>", media_type="text/html")
        if kind == "create-slow":
            await asyncio.sleep(2)
            return patient_json()
        if kind == "create-500":
            return Response(status_code=500)
        if kind == "create-503-once":
            return (
                Response(status_code=503)
                if n == 1
                else Response(
                    json.dumps({"resourceType": "Patient", "id": "new"}), status_code=201, media_type=FHIR
                )
            )
        if kind == "foreign-next":
            return searchset(
                [{"resourceType": "Patient", "id": "p1"}], "http://attacker.invalid/fhir/Patient?p=2"
            )
        if kind in ("smart", "smart-expired"):
            if rest == "token":
                return await token_endpoint(request, scenario)
            auth = request.headers.get("authorization", "")
            if not state.tokens or auth != f"Bearer {state.tokens[-1]}":
                return outcome(401, "login")
            if kind == "smart-expired" and n == 2:  # the server revokes the first token once
                state.tokens.append("revoked")
                return outcome(401, "login")
            return patient_json()
        if kind == "static":
            return (
                patient_json()
                if request.headers.get("authorization") == "Bearer s3cret"
                else outcome(401, "login")
            )
        return outcome(404, "not-found")

    async def token_endpoint(request: Request, scenario: str) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        assert form["grant_type"] == "client_credentials"
        assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        assert form["scope"] == "system/Patient.read"
        token_url = f"{state.root}/s/{scenario}/token"
        header = jwt.get_unverified_header(form["client_assertion"])
        claims = jwt.decode(
            form["client_assertion"], state.public_key, algorithms=["RS384"], audience=token_url
        )
        assert header["alg"] == "RS384" and header["kid"] == "key-1"
        assert claims["iss"] == claims["sub"] == "careflow-test" and claims["exp"] - claims["iat"] <= 300
        assert claims["jti"]
        state.tokens.append(f"tok-{len(state.tokens) + 1}")
        grant = {"access_token": state.tokens[-1], "token_type": "bearer", "expires_in": 300}
        return Response(json.dumps(grant), media_type="application/json")

    return app


@pytest_asyncio.fixture(scope="module")
async def flaky() -> AsyncIterator[Flaky]:
    state = Flaky()
    async with serve(flaky_app(state), lifespan="off") as root:
        state.root = root
        yield state


def client(base: str, pool: asyncpg.Pool, actor: str, **kw: Any) -> FhirClient:
    return FhirClient(base, audit=PostgresAuditTrail(pool), actor=actor, backoff_base=0.05, **kw)


def scenario_of(base: str) -> str:
    return base.rsplit("/", 1)[1]


async def test_retries_503_then_succeeds(flaky: Flaky, pool: asyncpg.Pool, actor: str) -> None:
    base = flaky.base("503x2")
    async with client(base, pool, actor) as fhir:
        assert (await fhir.read("Patient", "p1"))["id"] == "p1"
    assert flaky.hits[scenario_of(base)] == 3
    rows = await audit_rows(pool, actor)
    assert summary(rows) == [("phi-access", "R", "success", "Patient")]
    # Every attempt carried the call's request id, which is the audit event's.
    request_ids = {h["x-request-id"] for h in flaky.headers[scenario_of(base)]}
    assert request_ids == {rows[0]["request_id"]}


async def test_429_honours_retry_after(flaky: Flaky, pool: asyncpg.Pool, actor: str) -> None:
    base = flaky.base("429")
    async with client(base, pool, actor) as fhir:
        started = time.monotonic()
        await fhir.read("Patient", "p1")
        assert time.monotonic() - started >= 1.0
    assert flaky.hits[scenario_of(base)] == 2

    too_long = flaky.base("429-long")
    async with client(too_long, pool, actor, max_retry_after=5) as fhir:
        with pytest.raises(FhirUnavailable) as exc:
            await fhir.read("Patient", "p1")
    assert exc.value.status == 429 and exc.value.retry_after == 3600
    assert flaky.hits[scenario_of(too_long)] == 1


async def test_timeouts_and_transport_errors_are_retried(
    flaky: Flaky, pool: asyncpg.Pool, actor: str
) -> None:
    base = flaky.base("slow-first")
    async with client(base, pool, actor, timeout=0.5) as fhir:
        assert (await fhir.read("Patient", "p1"))["id"] == "p1"
    assert flaky.hits[scenario_of(base)] == 2

    # Nothing listens: every attempt fails to connect.
    async with client(f"http://127.0.0.1:{free_port()}/fhir", pool, actor) as fhir:
        with pytest.raises(FhirUnavailable) as exc:
            await fhir.read("Patient", "p1")
    assert exc.value.attempts == 3 and "ConnectError" in str(exc.value)


async def test_gives_up_after_max_attempts(flaky: Flaky, pool: asyncpg.Pool, actor: str) -> None:
    base = flaky.base("down")
    async with client(base, pool, actor) as fhir:
        with pytest.raises(FhirUnavailable) as exc:
            await fhir.read("Patient", "p1")
    assert exc.value.attempts == 3 and exc.value.status == 503
    assert flaky.hits[scenario_of(base)] == 3
    assert summary(await audit_rows(pool, actor)) == [("phi-access", "R", "failure", "Patient")]


async def test_client_errors_are_not_retried_and_carry_the_outcome(
    flaky: Flaky, pool: asyncpg.Pool, actor: str
) -> None:
    base = flaky.base("400")
    async with client(base, pool, actor) as fhir:
        with pytest.raises(FhirOperationError) as exc:
            await fhir.search("Patient", {"identifier": "x"})
    assert exc.value.status == 400 and exc.value.outcome["issue"][0]["code"] == "invalid"
    assert flaky.hits[scenario_of(base)] == 1
    assert "invalid" in str(exc.value) and "DIAGNOSTIC-TEXT" not in str(exc.value)  # codes, never diagnostics

    missing = flaky.base("404")
    async with client(missing, pool, actor) as fhir:
        with pytest.raises(FhirNotFound):
            await fhir.read("Patient", "p1")
    assert flaky.hits[scenario_of(missing)] == 1

    html = flaky.base("html")
    async with client(html, pool, actor) as fhir:
        with pytest.raises(FhirProtocolError):
            await fhir.read("Patient", "p1")


async def test_non_idempotent_create_is_not_retried_when_it_may_have_landed(
    flaky: Flaky, pool: asyncpg.Pool, actor: str
) -> None:
    patient = {"resourceType": "Patient"}
    for kind in ("create-slow", "create-500"):
        base = flaky.base(kind)
        async with client(base, pool, actor, timeout=0.5) as fhir:
            with pytest.raises(FhirUnavailable):
                await fhir.create(patient)
        assert flaky.hits[scenario_of(base)] == 1, kind
    # 503 says the request was not processed: retried.
    base = flaky.base("create-503-once")
    async with client(base, pool, actor) as fhir:
        assert (await fhir.create(patient))["id"] == "new"
    assert flaky.hits[scenario_of(base)] == 2


async def test_invalid_resources_are_refused_before_sending(
    flaky: Flaky, pool: asyncpg.Pool, actor: str
) -> None:
    base = flaky.base("503x2")
    async with client(base, pool, actor) as fhir:
        with pytest.raises(FhirValidationError) as exc:
            await fhir.create({"resourceType": "Patient", "birthDate": "someday"})
        assert exc.value.outcome["issue"][0]["expression"] == ["Patient.birthDate"]
        with pytest.raises(FhirValidationError):
            await fhir.update({"resourceType": "Patient"})  # no id
    assert flaky.hits[scenario_of(base)] == 0
    assert await audit_rows(pool, actor) == []


async def test_next_links_to_another_origin_are_refused(flaky: Flaky, pool: asyncpg.Pool, actor: str) -> None:
    async with client(flaky.base("foreign-next"), pool, actor) as fhir:
        with pytest.raises(FhirProtocolError):
            await fhir.search("Patient", {"active": "true"})


async def test_patient_context_runs_its_reads_concurrently(
    flaky: Flaky, pool: asyncpg.Pool, actor: str
) -> None:
    base = flaky.base("slow")  # every answer takes 0.4 s
    async with client(base, pool, actor) as fhir:
        started = time.monotonic()
        context = await fhir.patient_context(
            "p9", ["Patient", "Encounter", "Condition", "MedicationRequest", "Procedure"]
        )
        elapsed = time.monotonic() - started
    assert context["Patient"][0]["id"] == "p9" and context["Encounter"] == []
    assert flaky.hits[scenario_of(base)] == 5
    assert elapsed < 1.2, elapsed  # five sequential reads would take 2 s
    assert len(await audit_rows(pool, actor)) == 5


# -- auth ---------------------------------------------------------------------------------------------------
async def test_static_bearer_token(flaky: Flaky, pool: asyncpg.Pool, actor: str) -> None:
    async with client(flaky.base("static"), pool, actor, token=StaticToken("s3cret")) as fhir:
        assert (await fhir.read("Patient", "p1"))["id"] == "p1"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_smart_backend_services(
    flaky: Flaky, pool: asyncpg.Pool, actor: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    flaky.public_key = rsa_key.public_key()
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for kind, token_requests in (("smart", 1), ("smart-expired", 2)):
        base = flaky.base(kind)
        before = len(flaky.tokens)
        smart = SmartBackendServices(
            token_url=f"{base}/token", client_id="careflow-test", private_key=pem,
            scope="system/Patient.read", key_id="key-1",
        )  # fmt: skip
        async with client(base, pool, actor, token=smart) as fhir:
            for _ in range(3):
                assert (await fhir.read("Patient", "p1"))["id"] == "p1"
        # The token is cached across reads; a 401 fetches a fresh one once.
        assert len([t for t in flaky.tokens[before:] if t != "revoked"]) == token_requests, kind


# -- the PHI canary ---------------------------------------------------------------------------------------
async def test_phi_canary_never_reaches_logs_or_audit(
    database_url: str, flaky: Flaky, pool: asyncpg.Pool, actor: str
) -> None:
    canary = f"Qzx{uuid.uuid4().hex[:12]}"
    out = io.StringIO()
    configure_logging("DEBUG", "json", stream=out)
    log = get_logger("test.canary")
    # As under `careflow api` (log_config=None): uvicorn's loggers propagate into careflow's logging.
    # (A server started earlier in this process with uvicorn's default config may have detached them.)
    access = logging.getLogger("uvicorn.access")
    saved = (access.handlers[:], access.propagate)
    access.handlers, access.propagate = [], True
    try:
        # The sandbox as `careflow api` runs it: uvicorn's access log on, into careflow's logging.
        async with sandbox(database_url, access_log=True, log_level="info", log_config=None) as base:
            async with client(base, pool, actor) as fhir:
                patient = {
                    "resourceType": "Patient",
                    "name": [{"family": canary, "given": [canary]}],
                    "identifier": [{"system": "urn:test:mrn", "value": canary}],
                    "telecom": [{"system": "email", "value": f"{canary}@example.org"}],
                    "birthDate": "1961-02-03",
                }
                created, _ = await fhir.conditional_create(patient, f"urn:test:mrn|{canary}")
                pid = created["id"]
                await fhir.read("Patient", pid)
                assert [
                    p["id"] for p in await fhir.search("Patient", {"identifier": f"urn:test:mrn|{canary}"})
                ] == [pid]
                await fhir.update({**created, "active": True})
                await fhir.patient_context(pid, ["Patient", "Observation"])
                for bad in (
                    fhir.search("Patient", {"name": canary}),  # not a supported parameter: 400
                    fhir.create({"resourceType": "Patient", "birthDate": canary}),  # invalid: refused locally
                    fhir.read("Patient", f"missing-{uuid.uuid4().hex[:8]}"),  # 404
                ):
                    try:
                        await bad
                    except Exception as exc:
                        log.warning("fhir call failed", error=str(exc), error_type=type(exc).__name__)
                        log.exception("fhir call failed", exc_info=exc)
        # Retries against a failing server, with the canary in the query string.
        async with client(flaky.base("503x2"), pool, actor) as fhir:
            await fhir.search("Patient", {"identifier": f"urn:test:mrn|{canary}"})
    finally:
        configure_logging("WARNING", "json")
        access.handlers, access.propagate = saved
    logs = out.getvalue()
    assert "fhir request retry" in logs and "fhir call failed" in logs  # the paths above did log
    assert "GET /fhir/r4/Patient" in logs  # uvicorn's access log went through careflow's logging
    assert canary not in logs
    audit = await audit_rows(pool, actor)
    assert len(audit) >= 8
    assert canary not in json.dumps([dict(r) for r in audit], default=str)

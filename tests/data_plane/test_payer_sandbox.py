"""The sandbox payer (careflow/payer/sandbox.py) inside careflow's real API over HTTP, driven by the
PayerClient with PAS Bundles from build_pas_bundle, against the session Postgres."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from careflow.config import Settings
from careflow.fhir import codes
from careflow.fhir.resources import validate_resource
from careflow.net import free_port
from careflow.payer.client import PayerClient, PayerRejected, PayerUnavailable
from careflow.payer.pas import CLAIM_ID_SYSTEM, Code, build_pas_bundle, claim_identifier
from careflow.payer.sandbox import SandboxPolicy
from starters.api.app import create_app
from tests.support.serving import serve

SEMAGLUTIDE = Code(codes.RXNORM, "1991302", "semaglutide")
TKA = Code(codes.CPT, "27447", "Total knee arthroplasty")
DIABETES = Code(codes.ICD10CM, "E11.9", "Type 2 diabetes mellitus without complications")


def bundle(item: Code = SEMAGLUTIDE, *, order: str | None = None, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "order_id": order or f"ord-test-{uuid.uuid4().hex[:10]}",
        "patient_ref": "Patient/p-1",
        "coverage_ref": "Coverage/cov-1",
        "payer_ref": "Organization/payer-aetna",
        "payer_name": "Aetna",
        "requester_ref": "Practitioner/dr-1",
        "enterer_ref": "Practitioner/pa-staff-1",
        "item": item,
        "diagnoses": [DIABETES],
        "document_reference_id": "doc-1",
        "letter_text": "All payer criteria are met; see the cited evidence.",
        "priority": "standard",
        "created": datetime.now(UTC),
        "ehr_base_url": "http://ehr.example/fhir/r4",
        "criteria_met": 3,
    }
    return build_pas_bundle(**{**args, **overrides})


@dataclass
class Payer:
    base: str
    app: FastAPI
    pool: asyncpg.Pool

    def client(self, **kw: Any) -> PayerClient:
        return PayerClient(self.base, **kw)

    async def rows(self, order_id: str) -> int:
        key = f"{CLAIM_ID_SYSTEM}|{claim_identifier(order_id)}"
        return int(
            await self.pool.fetchval("SELECT count(*) FROM payer_claims WHERE claim_identifier=$1", key)
        )


@pytest_asyncio.fixture
async def payer(settings: Settings) -> AsyncIterator[Payer]:
    app = create_app(settings)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    async with serve(app) as root:
        yield Payer(root + "/payer/r4", app, pool)
    await pool.close()


def test_pas_bundle_shape() -> None:
    b = bundle(TKA, priority="expedited")
    assert b["type"] == "collection"
    claim = b["entry"][0]["resource"]
    assert (
        claim["resourceType"] == "Claim"
        and claim["use"] == "preauthorization"
        and claim["status"] == "active"
    )
    assert claim["priority"]["coding"][0]["code"] == "stat"
    assert claim["type"]["coding"][0]["code"] == "professional"
    assert claim["item"][0]["productOrService"]["coding"][0]["code"] == "27447"
    assert claim["insurance"][0]["coverage"] == {"reference": "Coverage/cov-1"}
    assert {"reference": "DocumentReference/doc-1"} in [
        s.get("valueReference") for s in claim["supportingInfo"]
    ]
    types = [e["resource"]["resourceType"] for e in b["entry"]]
    assert types == [
        "Claim",
        "Patient",
        "Coverage",
        "Organization",
        "Practitioner",
        "Practitioner",
        "DocumentReference",
    ]
    for i, entry in enumerate(b["entry"]):
        validate_resource(entry["resource"], where=f"Bundle.entry[{i}].resource")
        ref = f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
        assert entry["fullUrl"] == f"http://ehr.example/fhir/r4/{ref}"
    assert bundle(SEMAGLUTIDE)["entry"][0]["resource"]["type"]["coding"][0]["code"] == "pharmacy"


async def test_approved_and_resubmission_answers_the_same_claim_response(payer: Payer) -> None:
    order = f"ord-a-{uuid.uuid4().hex[:8]}"
    async with payer.client() as client:
        first = await client.submit(bundle(order=order))
        again = await client.submit(bundle(order=order, letter_text="a different letter"))
    assert first.outcome == "approved" and first.review_code == "A1"
    assert first.preauth_ref and first.preauth_ref.startswith("PA")
    assert again == first
    assert await payer.rows(order) == 1
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{payer.base}/ClaimResponse/{first.claim_response_id}")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/fhir+json")
    cr = resp.json()
    validate_resource(cr, expected_type="ClaimResponse")
    assert cr["outcome"] == "complete" and cr["preAuthRef"] == first.preauth_ref
    assert cr["request"]["identifier"] == {"system": CLAIM_ID_SYSTEM, "value": claim_identifier(order)}


async def test_concurrent_duplicates_store_one_claim(payer: Payer) -> None:
    order = f"ord-c-{uuid.uuid4().hex[:8]}"
    async with payer.client() as client:
        decisions = await asyncio.gather(*(client.submit(bundle(order=order)) for _ in range(8)))
    assert len({d.claim_response_id for d in decisions}) == 1
    assert await payer.rows(order) == 1


async def test_pended_item_is_decided_after_inquiries(payer: Payer) -> None:
    order = f"ord-p-{uuid.uuid4().hex[:8]}"
    async with payer.client() as client:
        pended = await client.submit(bundle(TKA, order=order))
        assert (pended.outcome, pended.review_code, pended.preauth_ref) == ("pended", "A4", None)
        first = await client.inquire(claim_identifier(order))
        assert first.outcome == "pended"  # pend_inquiries = 2
        second = await client.inquire(claim_identifier(order))
        third = await client.inquire(claim_identifier(order))
    assert second.outcome == "approved" and second.review_code == "A1" and second.preauth_ref
    assert third == second
    assert second.claim_response_id == pended.claim_response_id


async def test_uncovered_is_denied_and_unmet_criteria_are_denied_on_review(payer: Payer) -> None:
    not_met_order = f"ord-n-{uuid.uuid4().hex[:8]}"
    async with payer.client() as client:
        uncovered = await client.submit(bundle(Code(codes.CPT, "99999", "Not a covered service")))
        not_met = await client.submit(bundle(order=not_met_order, criteria_met=1, criteria_not_met=2))
        unknown = await client.submit(bundle(criteria_met=2, criteria_unknown=1))
        await client.inquire(claim_identifier(not_met_order))
        reviewed = await client.inquire(claim_identifier(not_met_order))
    assert (uncovered.outcome, uncovered.review_code, uncovered.preauth_ref) == ("denied", "A3", None)
    assert "not a covered benefit" in uncovered.disposition
    assert (not_met.outcome, unknown.outcome) == ("pended", "pended")
    assert (reviewed.outcome, reviewed.review_code, reviewed.preauth_ref) == ("denied", "A3", None)
    assert "criteria not met" in reviewed.disposition


async def test_configured_fraction_pends_by_identifier_hash(payer: Payer) -> None:
    payer.app.state.payer_policy = SandboxPolicy(pend_fraction=1.0, pend_inquiries=1)
    async with payer.client() as client:
        order = f"ord-f-{uuid.uuid4().hex[:8]}"
        assert (await client.submit(bundle(order=order))).outcome == "pended"
        assert (await client.inquire(claim_identifier(order))).outcome == "approved"


async def test_invalid_input_is_an_operation_outcome(payer: Payer) -> None:
    bad = bundle()
    bad["entry"][1]["resource"]["birthDate"] = "Jane Doe 1950"
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{payer.base}/Claim/$submit",
            content=json.dumps(bad),
            headers={"Content-Type": "application/fhir+json"},
        )
    assert resp.status_code == 400
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1].resource.birthDate" in outcome["issue"][0]["expression"]
    assert "Jane Doe" not in resp.text
    not_preauth = bundle()
    not_preauth["entry"][0]["resource"]["use"] = "claim"
    async with payer.client() as client:
        with pytest.raises(PayerRejected) as refused:
            await client.submit(bad)
        assert refused.value.status == 400 and "Jane Doe" not in str(refused.value)
        with pytest.raises(PayerRejected, match=re.escape("value at Bundle.entry[0].resource.use")):
            await client.submit(not_preauth)
        with pytest.raises(PayerRejected) as unknown:
            await client.inquire("pa-never-submitted")
        assert unknown.value.status == 404


def flaky(app: Any, failures: int) -> tuple[Callable[..., Awaitable[None]], list[int]]:
    """An ASGI wrapper answering 503 to the first `failures` requests, then passing through."""
    seen: list[int] = []

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(1)
            if len(seen) <= failures:
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"busy"})
                return
        await app(scope, receive, send)

    return wrapped, seen


async def test_retries_5xx_then_gives_up(settings: Settings) -> None:
    app = create_app(settings)
    recovering, seen = flaky(app, failures=2)
    async with serve(recovering) as root:
        async with PayerClient(root + "/payer/r4", backoff_s=0.01) as client:
            decision = await client.submit(bundle())
    assert decision.outcome == "approved" and len(seen) == 3

    down, seen = flaky(app, failures=10**6)
    async with serve(down) as root:
        async with PayerClient(root + "/payer/r4", attempts=3, backoff_s=0.01) as client:
            with pytest.raises(PayerUnavailable, match="after 3 attempts: HTTP 503"):
                await client.submit(bundle())
    assert len(seen) == 3


async def test_timeouts_and_connection_errors_are_retried() -> None:
    with socket.socket() as silent:  # listens, never answers: every request times out
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        async with PayerClient(f"http://127.0.0.1:{silent.getsockname()[1]}", attempts=2, backoff_s=0.01,
                               timeout_s=0.2) as client:  # fmt: skip
            with pytest.raises(PayerUnavailable, match="after 2 attempts: ReadTimeout"):
                await client.submit(bundle())
    async with PayerClient(f"http://127.0.0.1:{free_port()}", attempts=2, backoff_s=0.01) as client:
        with pytest.raises(PayerUnavailable, match="after 2 attempts: ConnectError"):
            await client.inquire("pa-anything")

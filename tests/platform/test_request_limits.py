"""Bad input to careflow's real API gets a clear 4xx in the route family's shape, never a 5xx:
oversized and deeply nested bodies, NUL characters, out-of-range numbers, loosely typed gateway
requests, a non-ASCII codec token.  (Each case was a 500 or a reset connection once.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from careflow.config import Settings
from careflow.llm.config import GatewayConfig
from careflow.llm.teams import sign_team_token
from careflow.validation import json_body_problem
from starters.api.app import create_app
from tests.support.serving import serve

DEEP = b"[" * 100_000
JSON = {"content-type": "application/json"}
FHIR = {"content-type": "application/fhir+json"}


@pytest_asyncio.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"api_max_body_bytes": 1024 * 1024}))
    async with serve(app) as root, httpx.AsyncClient(base_url=root, timeout=30) as client:
        token = sign_team_token(GatewayConfig().signing_secret(settings), "limits-test", ttl_days=1)
        client.headers["x-api-key"] = token
        yield client


def is_outcome(resp: httpx.Response, status: int) -> bool:
    return resp.status_code == status and resp.json()["resourceType"] == "OperationOutcome"


def is_gateway_error(resp: httpx.Response, status: int, kind: str = "invalid_request_error") -> bool:
    return resp.status_code == status and resp.json()["error"]["type"] == kind


def test_the_scanner() -> None:
    assert json_body_problem(b'{"a": [[1]], "b": "[[[[[[[["}', 3) is None  # brackets in strings
    assert json_body_problem(b'{"a": [[[[1]]]]}', 3) is not None
    assert json_body_problem(b'{"a": "x\\u0000"}', 64) is not None
    assert json_body_problem(b'{"a": "x\\\\u0000"}', 64) is None  # an escaped backslash, then text
    assert json_body_problem(b'{"a": "x\\"[[[[["}', 2) is None  # an escaped quote stays in the string


@pytest.mark.parametrize(
    ("path", "headers", "fhir"),
    [
        ("/v1/messages", JSON, False),
        ("/v1/events/orders", JSON, False),
        ("/v1/rag/query", JSON, False),
        ("/fhir/r4/Patient", FHIR, True),
        ("/payer/r4/Claim/$submit", FHIR, True),
        ("/codec/encode", JSON, False),
    ],
)
async def test_deeply_nested_json_is_400_everywhere(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], fhir: bool
) -> None:
    for body in (DEEP, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        resp = await http.post(path, content=body, headers=headers)
        assert is_outcome(resp, 400) if fhir else is_gateway_error(resp, 400), resp.text


async def test_body_size_limit_is_413(http: httpx.AsyncClient) -> None:
    big = {"resourceType": "Patient", "text": {"status": "generated", "div": "x" * 2 * 1024 * 1024}}
    assert is_outcome(await http.post("/fhir/r4/Patient", json=big, headers=FHIR), 413)
    resp = await http.post("/v1/messages", json={"model": "efficient", "max_tokens": 1, "pad": "x" * 2**21})
    assert is_gateway_error(resp, 413, "request_too_large")


async def test_nul_characters_are_400(http: httpx.AsyncClient) -> None:
    patient = b'{"resourceType": "Patient", "name": [{"family": "A\\u0000B"}]}'
    assert is_outcome(await http.post("/fhir/r4/Patient", content=patient, headers=FHIR), 400)
    bundle = b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient", "id": "x\\u0000"}, "request": {"method": "POST", "url": "Patient"}}]}'  # noqa: E501
    assert is_outcome(await http.post("/fhir/r4", content=bundle, headers=FHIR), 400)
    for url in (
        "/fhir/r4/Patient?identifier=%00",
        "/fhir/r4/Observation?code=%00|%00",
        "/payer/r4/ClaimResponse/%00",
    ):
        assert is_outcome(await http.get(url), 400), url
    ok = b'{"resourceType": "Patient", "identifier": [{"value": "nul-test"}]}'
    resp = await http.post(
        "/fhir/r4/Patient", content=ok, headers={**FHIR, "If-None-Exist": "identifier=%00"}
    )
    assert is_outcome(resp, 400)


async def test_out_of_range_numbers_are_400(http: httpx.AsyncClient) -> None:
    huge = "99999999999999999999"
    assert is_outcome(await http.get(f"/fhir/r4/Patient?_offset={huge}"), 400)
    assert is_outcome(await http.get(f"/fhir/r4/Patient?_count={huge}"), 400)
    created = await http.post("/fhir/r4/Patient", json={"resourceType": "Patient"}, headers=FHIR)
    assert created.status_code == 201
    pid = created.json()["id"]
    assert is_outcome(await http.get(f"/fhir/r4/Patient/{pid}/_history/{huge}"), 400)
    assert is_outcome(await http.get(f"/fhir/r4/Patient/{pid}/_history?_offset={huge}"), 400)


@pytest.mark.parametrize(
    "change",
    [
        {"max_tokens": 1_000_000_000_000},
        {"max_tokens": "123"},
        {"max_tokens": True},
        {"max_tokens": 0},
        {"messages": []},
        {"stream": "yes"},
        {"temperature": 7},
    ],
)
async def test_gateway_requests_are_typed_as_strictly_as_anthropics(
    http: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    body = {"model": "efficient", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    resp = await http.post("/v1/messages", json={**body, **change})
    assert is_gateway_error(resp, 400), resp.text
    assert next(iter(change)) in resp.json()["error"]["message"]


async def test_a_non_ascii_codec_token_is_401(http: httpx.AsyncClient) -> None:
    payloads = {"payloads": []}
    assert (await http.post("/codec/t/%C3%A9/decode", json=payloads)).status_code == 401
    resp = await http.post("/codec/decode", json=payloads, headers={"Authorization": "Bearer é".encode()})
    assert resp.status_code == 401

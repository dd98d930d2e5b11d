"""careflow's real API fuzzed: every route of its OpenAPI document with schemathesis (valid and invalid
inputs), JSON bodies of any shape to every route that takes one, and FHIR search parameters of every
resource type with hostile values.  Bounded and seeded (derandomized), so a run is repeatable and
fits the suite's time.  The one property: no answer is a 5xx, whatever was sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from careflow.config import Settings
from careflow.fhir import search
from careflow.llm.config import GatewayConfig
from careflow.llm.teams import sign_team_token
from starters.api.app import create_app
from tests.support.serving import serve

FUZZ = settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
JSON_ROUTES = [
    "/v1/messages",
    "/v1/events/orders",
    "/v1/rag/query",
    "/fhir/r4",
    "/fhir/r4/Patient",
    "/payer/r4/Claim/$submit",
    "/payer/r4/Claim/$inquire",
    "/codec/encode",
    "/codec/decode",
]
HOSTILE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["%00", "\x00", "99999999999999999999", "-1", "ge", "eq2026-13-45", "|", "||", "a,b,,",
                     "Patient/", "/", "..", "%", "é", "\U0001f600", "ge9999-99-99T99:99", "x" * 500]),
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture
async def api_root(settings: Settings) -> Iterator[str]:
    async with serve(create_app(settings)) as root:
        yield root


def token(settings: Settings) -> str:
    # A well-formed token of a team that does not exist: routes get past parsing, and nothing starts.
    return sign_team_token(GatewayConfig().signing_secret(settings), "fuzz-no-such-team", ttl_days=1)


async def test_every_openapi_route_answers_below_500(api_root: str, settings: Settings) -> None:
    headers = {"x-api-key": token(settings)}

    def fuzz() -> list[str]:
        schema = schemathesis.openapi.from_url(f"{api_root}/openapi.json")
        failures: list[str] = []
        seen: list[int] = []
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @FUZZ
                @given(case=operation.as_strategy(generation_mode=mode))
                def check(case: schemathesis.Case) -> None:
                    response = case.call(base_url=api_root, headers=headers, timeout=30)
                    seen.append(response.status_code)
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

                try:
                    check()
                except Unsatisfiable:  # no invalid input exists for an operation without parameters
                    assert mode == GenerationMode.NEGATIVE, operation.label
        assert len(seen) >= 100 and any(code < 300 for code in seen)  # it did reach the routes
        return failures

    failures = await asyncio.to_thread(fuzz)
    assert failures == []


async def test_json_of_any_shape_to_every_body_route_answers_below_500(
    api_root: str, settings: Settings
) -> None:
    def fuzz() -> list[str]:
        failures: list[str] = []
        with httpx.Client(base_url=api_root, timeout=30) as http:

            @FUZZ
            @given(route=st.sampled_from(JSON_ROUTES), body=JSON, authed=st.booleans())
            def check(route: str, body: Any, authed: bool) -> None:
                headers = {"content-type": "application/json"}
                if authed:
                    headers["x-api-key"] = token(settings)
                response = http.post(route, content=json.dumps(body), headers=headers)
                if response.status_code >= 500:
                    failures.append(f"POST {route} {json.dumps(body)[:80]} -> {response.status_code}")

            check()
        return failures

    assert await asyncio.to_thread(fuzz) == []


async def test_fhir_search_with_hostile_parameters_answers_below_500(api_root: str) -> None:
    types = [
        "Patient",
        "Observation",
        "Encounter",
        "Condition",
        "Task",
        "MedicationRequest",
        "DocumentReference",
    ]
    names = {
        t: [*search.param_defs(t), "_sort", "_count", "_offset", "_id", "_lastUpdated", "bogus"]
        for t in types
    }

    def fuzz() -> list[str]:
        failures: list[str] = []
        with httpx.Client(base_url=f"{api_root}/fhir/r4", timeout=30) as http:

            @settings(parent=FUZZ, max_examples=60)
            @given(data=st.data())
            def check(data: st.DataObject) -> None:
                rtype = data.draw(st.sampled_from(types))
                params = data.draw(
                    st.lists(st.tuples(st.sampled_from(names[rtype]), HOSTILE), min_size=1, max_size=4)
                )
                response = http.get(rtype, params=params)
                if response.status_code >= 500:
                    failures.append(f"GET {rtype}?{params} -> {response.status_code}")

            check()
        return failures

    assert await asyncio.to_thread(fuzz) == []

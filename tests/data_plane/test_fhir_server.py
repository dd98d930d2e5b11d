"""Conformance of the sandbox EHR (careflow/fhir/server.py) over real HTTP against the session Postgres:
every interaction, errors as OperationOutcome, all-or-nothing transactions, conditional create under
concurrency, and resources from other generators stored and returned unchanged."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from careflow.config import Settings
from tests.support.fhir_sandbox import sandbox, serve

FHIR = "application/fhir+json"


@pytest_asyncio.fixture(scope="module")
async def base(database_url: str) -> AsyncIterator[str]:
    async with sandbox(database_url) as url:
        yield url


@pytest_asyncio.fixture
async def http(base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base + "/", timeout=30, headers={"Accept": FHIR}) as client:
        yield client


def tag() -> str:
    return uuid.uuid4().hex[:12]


async def post(http: httpx.AsyncClient, path: str, body: Any, **headers: str) -> httpx.Response:
    return await http.post(path, content=json.dumps(body), headers={"Content-Type": FHIR, **headers})


async def put(http: httpx.AsyncClient, path: str, body: Any, **headers: str) -> httpx.Response:
    return await http.put(path, content=json.dumps(body), headers={"Content-Type": FHIR, **headers})


def assert_outcome(resp: httpx.Response, status: int, expression: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(FHIR)
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"]
    for issue in outcome["issue"]:
        assert issue["severity"] == "error" and issue["code"] and issue["diagnostics"]
    if expression is not None:
        found = [e for i in outcome["issue"] for e in i.get("expression", [])]
        assert expression in found, found
    return outcome


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


async def search(http: httpx.AsyncClient, rtype: str, params: dict[str, str] | list[tuple[str, str]]) -> dict:
    resp = await http.get(rtype, params=params)
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


# -- capability ----------------------------------------------------------------------------------------
async def test_metadata_is_a_capability_statement(http: httpx.AsyncClient) -> None:
    resp = await http.get("metadata")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(FHIR)
    cap = resp.json()
    assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
    rest = cap["rest"][0]
    assert {"transaction", "batch"} <= {i["code"] for i in rest["interaction"]}
    by_type = {r["type"]: r for r in rest["resource"]}
    assert len(by_type) > 100
    obs = by_type["Observation"]
    assert {"read", "vread", "update", "create", "search-type", "history-instance"} <= {
        i["code"] for i in obs["interaction"]
    }
    assert obs["conditionalCreate"] and obs["versioning"] == "versioned-update"
    params = {p["name"] for p in obs["searchParam"]}
    assert {"_id", "patient", "subject", "identifier", "status", "category", "code", "date"} <= params


async def test_mounted_in_careflows_api(database_url: str) -> None:
    from starters.api.app import create_app

    async with serve(create_app(Settings())) as root, httpx.AsyncClient() as h:
        resp = await h.get(f"{root}/fhir/r4/metadata")
        assert resp.status_code == 200 and resp.json()["resourceType"] == "CapabilityStatement"
        assert Settings().fhir_base_url.endswith("/fhir/r4")


# -- create / read / vread / history / update / delete ---------------------------------------------------
async def test_versioned_life_cycle(http: httpx.AsyncClient, base: str) -> None:
    patient = {"resourceType": "Patient", "id": "client-chosen", "active": True, "gender": "female"}
    created = await post(http, "Patient", patient)
    assert created.status_code == 201, created.text
    body = created.json()
    pid = body["id"]
    assert pid != "client-chosen"  # create ignores a client id
    assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"].endswith("Z")
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"] == f"{base}/Patient/{pid}/_history/1"
    assert "last-modified" in created.headers

    read = await http.get(f"Patient/{pid}")
    assert read.status_code == 200 and read.json() == body and read.headers["etag"] == 'W/"1"'

    v2 = {**body, "gender": "male"}
    updated = await put(http, f"Patient/{pid}", v2, **{"If-Match": 'W/"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.json()["meta"]["versionId"] == "2" and updated.json()["gender"] == "male"

    stale = await put(http, f"Patient/{pid}", {**v2, "gender": "other"}, **{"If-Match": 'W/"1"'})
    assert_outcome(stale, 412)
    assert (await http.get(f"Patient/{pid}")).json()["gender"] == "male"

    # The same content again is not a new version (a retried update is harmless).
    same = await put(http, f"Patient/{pid}", updated.json())
    assert same.status_code == 200 and same.json()["meta"]["versionId"] == "2"

    assert (await http.get(f"Patient/{pid}/_history/1")).json()["gender"] == "female"
    assert (await http.get(f"Patient/{pid}/_history/2")).json()["gender"] == "male"
    assert_outcome(await http.get(f"Patient/{pid}/_history/3"), 404)

    deleted = await http.delete(f"Patient/{pid}")
    assert deleted.status_code == 204
    assert_outcome(await http.get(f"Patient/{pid}"), 410)
    assert pid not in ids(await search(http, "Patient", {"_id": pid}))

    history = (await http.get(f"Patient/{pid}/_history")).json()
    assert history["type"] == "history" and history["total"] == 3
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "POST"]
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert "resource" not in history["entry"][0]

    # Written again after the delete: the version counter carries on.
    again = await put(http, f"Patient/{pid}", {"resourceType": "Patient", "id": pid, "active": False})
    assert again.status_code == 201 and again.json()["meta"]["versionId"] == "4"


async def test_update_as_create_and_id_rules(http: httpx.AsyncClient) -> None:
    rid = f"pat-{tag()}"
    created = await put(http, f"Patient/{rid}", {"resourceType": "Patient", "id": rid})
    assert created.status_code == 201 and created.json()["id"] == rid
    assert_outcome(
        await put(http, f"Patient/{rid}", {"resourceType": "Patient", "id": "other"}), 400, "Patient.id"
    )
    assert_outcome(await put(http, f"Patient/{rid}", {"resourceType": "Patient"}), 400, "Patient.id")
    assert_outcome(
        await put(http, f"Patient/{tag()}", {"resourceType": "Patient", "id": "x"}, **{"If-Match": 'W/"1"'}),
        400,
    )
    # If-Match on a resource that does not exist yet: the precondition fails.
    new_id = f"pat-{tag()}"
    assert_outcome(
        await put(
            http, f"Patient/{new_id}", {"resourceType": "Patient", "id": new_id}, **{"If-Match": '"1"'}
        ),
        412,
    )


async def test_prefer_return_minimal(http: httpx.AsyncClient) -> None:
    resp = await post(http, "Patient", {"resourceType": "Patient"}, Prefer="handling=strict, return=minimal")
    assert resp.status_code == 201 and resp.content == b"" and resp.headers["location"]


# -- validation and errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "status", "expression"),
    [
        ("Patient", {"resourceType": "Patient", "gender": 5}, 422, "Patient.gender"),
        ("Patient", {"resourceType": "Patient", "birthDate": "1950-13-45"}, 422, "Patient.birthDate"),
        ("Patient", {"resourceType": "Patient", "name": [{"given": "Ann"}]}, 422, "Patient.name[0].given"),
        ("Patient", {"resourceType": "Patient", "nickname": "x"}, 422, "Patient.nickname"),
        ("Observation", {"resourceType": "Observation", "code": {"text": "x"}}, 422, "Observation.status"),
        ("Patient", {"resourceType": "Observation", "status": "final"}, 400, "Observation.resourceType"),
        ("Patient", {"resourceType": "Nonsense"}, 400, None),
        ("Patient", ["not", "an", "object"], 400, None),
    ],
)
async def test_invalid_resources_are_refused_with_where(
    http: httpx.AsyncClient, path: str, body: Any, status: int, expression: str | None
) -> None:
    assert_outcome(await post(http, path, body), status, expression)


async def test_diagnostics_never_echo_the_submitted_value(http: httpx.AsyncClient) -> None:
    canary = f"CANARY{tag()}"
    resp = await post(http, "Patient", {"resourceType": "Patient", "birthDate": canary, "gender": [canary]})
    assert_outcome(resp, 422)
    assert canary not in resp.text


async def test_protocol_errors_are_operation_outcomes(http: httpx.AsyncClient) -> None:
    bad_json = await http.post(
        "Patient", content=b'{"resourceType": "Patient",', headers={"Content-Type": FHIR}
    )
    assert_outcome(bad_json, 400)
    assert_outcome(
        await http.post("Patient", content=b"<Patient/>", headers={"Content-Type": "application/xml"}), 415
    )
    assert_outcome(await http.get("Nonsense/1"), 404)
    assert_outcome(await http.get("Patient/not_a valid id"), 400)
    assert_outcome(await http.get(f"Patient/{tag()}"), 404)
    assert_outcome(await http.get(f"Patient/{tag()}/_history/x"), 400)
    assert_outcome(await http.patch(f"Patient/{tag()}", content=b"[]"), 405)
    assert_outcome(await http.get("Patient/1/2/3/4/5"), 404)
    assert_outcome(await http.get("Patient/_history"), 404)
    assert_outcome(await search_raw(http, "Observation", {"frobnicate": "1"}), 400, "frobnicate")
    assert_outcome(await search_raw(http, "Observation", {"date": "yesterday"}), 400, "date")
    assert_outcome(await search_raw(http, "Observation", {"code:fuzzy": "x"}), 400, "code:fuzzy")
    assert_outcome(await search_raw(http, "Observation", {"_sort": "value"}), 400, "_sort")
    assert_outcome(await search_raw(http, "Observation", {"_count": "-1"}), 400, "_count")
    lenient = await http.get(
        "Observation", params={"frobnicate": "1", "_count": "1"}, headers={"Prefer": "handling=lenient"}
    )
    assert lenient.status_code == 200
    assert "frobnicate" not in lenient.json()["link"][0]["url"]


async def search_raw(http: httpx.AsyncClient, rtype: str, params: dict[str, str]) -> httpx.Response:
    return await http.get(rtype, params=params)


# -- search ---------------------------------------------------------------------------------------------
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def observation(
    pid: str,
    code: str,
    when: str | dict[str, str],
    *,
    status: str = "final",
    cat: str = "laboratory",
    ident: str | None = None,
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": status,
        "category": [{"coding": [{"system": CATEGORY, "code": cat}]}],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": 1.0, "unit": "mg/dL"},
    }
    if isinstance(when, str):
        obs["effectiveDateTime"] = when
    else:
        obs["effectivePeriod"] = when
    if ident:
        obs["identifier"] = [{"system": "urn:test:obs", "value": ident}]
    return obs


@pytest_asyncio.fixture
async def chart(http: httpx.AsyncClient) -> dict[str, Any]:
    """A patient with a small, known set of observations and an encounter."""
    mrn = f"MRN-{tag()}"
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:mrn", "value": mrn}],
        "birthDate": "1950-06-15",
    }
    pid = (await post(http, "Patient", patient)).json()["id"]
    specs = [
        ("2160-0", "2024-01-10T08:00:00Z", "final", "laboratory"),  # creatinine
        ("2160-0", "2024-02-10T08:00:00Z", "final", "laboratory"),
        ("2160-0", "2024-03-10T08:00:00+02:00", "amended", "laboratory"),
        ("2951-2", "2024-02-10", "final", "laboratory"),  # sodium, day precision
        ("8867-4", {"start": "2024-02-01T00:00:00Z", "end": "2024-02-03T00:00:00Z"}, "final", "vital-signs"),
        ("8867-4", "2024-04-01T09:30:00Z", "cancelled", "vital-signs"),
    ]
    obs_ids = []
    for i, (code, when, status, cat) in enumerate(specs):
        resp = await post(
            http, "Observation", observation(pid, code, when, status=status, cat=cat, ident=f"{mrn}-{i}")
        )
        assert resp.status_code == 201, resp.text
        obs_ids.append(resp.json()["id"])
    enc = await post(http, "Encounter", {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{pid}"}, "period": {"start": "2024-02-01T10:00:00Z"},
    })  # fmt: skip
    return {"pid": pid, "mrn": mrn, "obs": obs_ids, "encounter": enc.json()["id"]}


async def test_search_by_patient_subject_code_category_status(
    http: httpx.AsyncClient, chart: dict[str, Any]
) -> None:
    pid, obs = chart["pid"], chart["obs"]
    every = await search(http, "Observation", {"patient": pid})
    assert every["total"] == 6 and sorted(ids(every)) == sorted(obs)
    assert every["entry"][0]["search"]["mode"] == "match"
    assert every["entry"][0]["fullUrl"].endswith(f"/Observation/{every['entry'][0]['resource']['id']}")
    assert ids(await search(http, "Observation", {"subject": f"Patient/{pid}"})) == ids(every)
    assert sorted(ids(await search(http, "Observation", {"subject": pid}))) == sorted(obs)

    def q(**params: str) -> list[tuple[str, str]]:
        return [("patient", pid), *params.items()]

    creat = set(ids(await search(http, "Observation", q(code=f"{LOINC}|2160-0"))))
    assert creat == set(obs[:3])
    assert set(ids(await search(http, "Observation", q(code="2160-0")))) == creat
    assert not ids(await search(http, "Observation", q(code="http://snomed.info/sct|2160-0")))
    assert set(ids(await search(http, "Observation", q(code=f"{LOINC}|2160-0,{LOINC}|2951-2")))) == set(
        obs[:4]
    )
    assert set(ids(await search(http, "Observation", q(category="vital-signs")))) == set(obs[4:])
    assert set(ids(await search(http, "Observation", q(category=f"{CATEGORY}|laboratory")))) == set(obs[:4])
    assert set(ids(await search(http, "Observation", q(status="final")))) == {obs[0], obs[1], obs[3], obs[4]}
    assert set(ids(await search(http, "Observation", q(status="amended,cancelled")))) == {obs[2], obs[5]}
    assert set(ids(await search(http, "Observation", q(**{"status:not": "final"})))) == {obs[2], obs[5]}
    assert ids(await search(http, "Encounter", {"patient": pid, "class": "IMP"})) == [chart["encounter"]]
    assert ids(await search(http, "Encounter", {"patient": pid, "status": "finished"})) == [
        chart["encounter"]
    ]


async def test_search_by_date_prefixes(http: httpx.AsyncClient, chart: dict[str, Any]) -> None:
    pid, obs = chart["pid"], chart["obs"]

    async def dates(*values: str) -> set[str]:
        return set(ids(await search(http, "Observation", [("patient", pid), *(("date", v) for v in values)])))

    # obs[0] Jan 10, obs[1] Feb 10 08:00Z, obs[2] Mar 10 06:00Z, obs[3] all of Feb 10,
    # obs[4] Feb 1-3, obs[5] Apr 1
    assert await dates("2024-02-10") == {obs[1], obs[3]}  # eq: contained in the day
    assert await dates("eq2024-02") == {obs[1], obs[3], obs[4]}
    assert await dates("ge2024-02-10") == {obs[1], obs[2], obs[3], obs[5]}
    assert await dates("gt2024-02-10") == {obs[2], obs[5]}
    assert await dates("lt2024-02-10") == {obs[0], obs[4]}
    assert await dates("le2024-02-10") == {obs[0], obs[1], obs[3], obs[4]}
    assert await dates("ge2024-02-01", "lt2024-03") == {obs[1], obs[3], obs[4]}
    assert await dates("2024-03-10T06:00:00Z") == {obs[2]}  # +02:00 normalised
    assert await dates("ge2024-02-02T12:00:00Z", "le2024-02-02T13:00:00Z") == {obs[4]}  # inside the period
    assert await dates("2024") == set(obs)
    assert await dates("2023") == set()
    assert ids(await search(http, "Encounter", {"patient": pid, "date": "ge2024-06-01"})) == [
        chart["encounter"]
    ]  # open end
    assert ids(await search(http, "Patient", {"_id": pid, "birthdate": "1950"})) == [pid]
    assert not ids(await search(http, "Patient", {"_id": pid, "birthdate": "lt1950-06-15"}))


async def test_search_identifier_id_sort_lastupdated_and_paging(
    http: httpx.AsyncClient, chart: dict[str, Any]
) -> None:
    pid, obs, mrn = chart["pid"], chart["obs"], chart["mrn"]
    assert ids(await search(http, "Patient", {"identifier": f"urn:test:mrn|{mrn}"})) == [pid]
    assert ids(await search(http, "Patient", {"identifier": mrn})) == [pid]
    assert not ids(await search(http, "Patient", {"identifier": f"urn:other|{mrn}"}))
    assert ids(await search(http, "Observation", {"identifier": f"urn:test:obs|{mrn}-3"})) == [obs[3]]
    assert set(ids(await search(http, "Observation", {"_id": f"{obs[0]},{obs[5]}"}))) == {obs[0], obs[5]}

    ascending = ids(await search(http, "Observation", {"patient": pid, "_sort": "date"}))
    assert ascending == [obs[0], obs[4], obs[3], obs[1], obs[2], obs[5]]  # by the start of each range
    assert ids(await search(http, "Observation", {"patient": pid, "_sort": "-date"})) == ascending[::-1]
    by_update = ids(await search(http, "Observation", {"patient": pid, "_sort": "_lastUpdated"}))
    assert by_update == obs

    third = (await http.get(f"Observation/{obs[2]}")).json()["meta"]["lastUpdated"]
    later = set(ids(await search(http, "Observation", {"patient": pid, "_lastUpdated": f"ge{third}"})))
    assert later == set(obs[2:])

    # Paging: follow next links; every match exactly once, in order.
    seen: list[str] = []
    page = await search(http, "Observation", {"patient": pid, "_count": "4", "_sort": "date"})
    assert page["total"] == 6
    while True:
        seen += ids(page)
        links = {link["relation"]: link["url"] for link in page["link"]}
        if "next" not in links:
            break
        nxt = await http.get(links["next"])
        page = nxt.json()
        assert "previous" in {link["relation"] for link in page["link"]}
    assert seen == ascending

    # Sorted searches that match nothing, and a page past the end, still count (the sort's own
    # query argument once broke the count: an MRN searched as a patient id answered 500).
    for params in ({"patient": "not-a-known-patient", "_sort": "-date"}, {"_sort": "-date", "patient": "x"}):
        empty = await search(http, "Encounter", params)
        assert empty["total"] == 0 and not ids(empty)
    past = await search(http, "Observation", {"_sort": "-date", "patient": pid, "_offset": "50"})
    assert past["total"] == 6 and not ids(past)


# -- conditional create ---------------------------------------------------------------------------------
async def test_conditional_create(http: httpx.AsyncClient) -> None:
    ident = f"urn:test:cc|{tag()}"
    system, value = ident.split("|")
    body = {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}
    first = await post(http, "Patient", body, **{"If-None-Exist": f"identifier={ident}"})
    second = await post(http, "Patient", body, **{"If-None-Exist": f"identifier={ident}"})
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert second.json()["meta"]["versionId"] == "1"
    # Two resources match the criteria: the create is refused.
    await post(http, "Patient", body)
    assert_outcome(await post(http, "Patient", body, **{"If-None-Exist": f"identifier={ident}"}), 412)
    assert_outcome(await post(http, "Patient", body, **{"If-None-Exist": "bogus=1"}), 400)


async def test_fifty_concurrent_conditional_creates_make_one_resource(database_url: str) -> None:
    ident_value = f"race-{tag()}"
    body = json.dumps(
        {"resourceType": "Patient", "identifier": [{"system": "urn:test:race", "value": ident_value}]}
    )
    headers = {"Content-Type": FHIR, "If-None-Exist": f"identifier=urn:test:race|{ident_value}"}
    # Two server instances with their own pools, 25 requests each, all at once.
    async with sandbox(database_url) as one, sandbox(database_url) as two, httpx.AsyncClient(timeout=60) as h:
        results = await asyncio.gather(
            *(h.post(f"{(one, two)[i % 2]}/Patient", content=body, headers=headers) for i in range(50))
        )
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200] * 49 + [201], statuses
        assert len({r.json()["id"] for r in results}) == 1
        found = (await h.get(f"{one}/Patient", params={"identifier": f"urn:test:race|{ident_value}"})).json()
        assert found["total"] == 1


async def test_concurrent_bundles_sharing_conditional_entries(http: httpx.AsyncClient) -> None:
    """Patient Bundles repeat the staff they reference as conditional creates: loaded all at once, they
    neither deadlock (locks are taken in one order) nor duplicate a practitioner."""
    from datetime import date

    from careflow.fhir.synthetic import generate

    seed = uuid.uuid4().int % 1_000_000 + 2_000_000
    _, *patients = generate(seed, 4, date(2025, 1, 1))
    responses = await asyncio.gather(*(post(http, "", bundle) for bundle in patients))
    assert [r.status_code for r in responses] == [200] * 4
    system = "https://careflow.dev/fhir/sid/synthetic"
    shared = {
        e["request"]["ifNoneExist"].split("|", 1)[1]
        for b in patients
        for e in b["entry"]
        if e["resource"]["resourceType"] in ("Practitioner", "Organization")
    }
    for value in shared:
        rtype = "Organization" if ".org." in value else "Practitioner"
        assert (await search(http, rtype, {"identifier": f"{system}|{value}"}))["total"] == 1, value


# -- transactions ---------------------------------------------------------------------------------------
def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def post_entry(
    resource: dict[str, Any], full_url: str | None = None, if_none_exist: str | None = None
) -> dict:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        entry["fullUrl"] = full_url
    if if_none_exist:
        entry["request"]["ifNoneExist"] = if_none_exist
    return entry


async def test_transaction_resolves_urn_references(http: httpx.AsyncClient) -> None:
    mrn = tag()
    p_url, e_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    bundle = transaction(
        post_entry(observation("x", "2160-0", "2024-01-01") | {"subject": {"reference": p_url},
                                                                 "encounter": {"reference": e_url}}),
        post_entry({"resourceType": "Patient", "identifier": [{"system": "urn:test:mrn", "value": mrn}]},
                   p_url, f"identifier=urn:test:mrn|{mrn}"),
        post_entry({"resourceType": "Encounter", "status": "finished", "subject": {"reference": p_url},
                    "class": {"code": "AMB"}}, e_url),
    )  # fmt: skip
    resp = await post(http, "", bundle)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["type"] == "transaction-response" and len(out["entry"]) == 3
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created"] * 3
    locations = [e["response"]["location"] for e in out["entry"]]
    assert [loc.split("/")[0] for loc in locations] == ["Observation", "Patient", "Encounter"]
    pid, eid = locations[1].split("/")[1], locations[2].split("/")[1]
    obs = (await http.get("/".join(locations[0].split("/")[:2]))).json()
    assert obs["subject"] == {"reference": f"Patient/{pid}"} and obs["encounter"] == {
        "reference": f"Encounter/{eid}"
    }
    assert ids(await search(http, "Observation", {"patient": pid})) == [obs["id"]]

    # Again: the conditional Patient is found, the plain creates are new.
    again = (await post(http, "", bundle)).json()
    assert [e["response"]["status"] for e in again["entry"]] == ["201 Created", "200 OK", "201 Created"]
    assert again["entry"][1]["response"]["location"] == locations[1]
    obs2 = (await http.get("/".join(again["entry"][0]["response"]["location"].split("/")[:2]))).json()
    assert obs2["subject"] == {"reference": f"Patient/{pid}"}


async def test_transaction_with_one_bad_entry_changes_nothing(http: httpx.AsyncClient) -> None:
    mrn = tag()
    good = {"resourceType": "Patient", "identifier": [{"system": "urn:test:mrn", "value": mrn}]}
    bad = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": "high"},
    }
    resp = await post(
        http, "", transaction(post_entry(good), post_entry(copy.deepcopy(good)), post_entry(bad))
    )
    assert_outcome(resp, 422, "Bundle.entry[2].resource.valueQuantity.value")
    assert not ids(await search(http, "Patient", {"identifier": f"urn:test:mrn|{mrn}"}))

    # A failure found while writing (a stale If-Match after two creates) rolls the creates back too.
    rid = f"pat-{tag()}"
    await put(http, f"Patient/{rid}", {"resourceType": "Patient", "id": rid})
    stale = {"resource": {"resourceType": "Patient", "id": rid, "active": True},
             "request": {"method": "PUT", "url": f"Patient/{rid}", "ifMatch": 'W/"7"'}}  # fmt: skip
    resp = await post(http, "", transaction(post_entry(good), stale))
    assert_outcome(resp, 412, "Bundle.entry[1]")
    assert not ids(await search(http, "Patient", {"identifier": f"urn:test:mrn|{mrn}"}))
    assert (await http.get(f"Patient/{rid}")).json()["meta"]["versionId"] == "1"

    # A urn: reference that names no entry.
    dangling = observation("x", "2160-0", "2024-01-01") | {
        "subject": {"reference": f"urn:uuid:{uuid.uuid4()}"}
    }
    resp = await post(http, "", transaction(post_entry(good), post_entry(dangling)))
    assert_outcome(resp, 400, "Bundle.entry[1]")
    assert not ids(await search(http, "Patient", {"identifier": f"urn:test:mrn|{mrn}"}))


async def test_transaction_update_delete_and_conditional_reference(http: httpx.AsyncClient) -> None:
    mrn = tag()
    pid = (
        await post(
            http,
            "Patient",
            {"resourceType": "Patient", "identifier": [{"system": "urn:test:mrn", "value": mrn}]},
        )
    ).json()["id"]
    doomed = (await post(http, "Patient", {"resourceType": "Patient"})).json()["id"]
    bundle = transaction(
        {"resource": {"resourceType": "Patient", "id": pid, "active": True,
                      "identifier": [{"system": "urn:test:mrn", "value": mrn}]},
         "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"1"'}},
        {"request": {"method": "DELETE", "url": f"Patient/{doomed}"}},
        post_entry(observation("x", "2160-0", "2024-01-01")
                   | {"subject": {"reference": f"Patient?identifier=urn:test:mrn|{mrn}"}}),
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
    )  # fmt: skip
    resp = await post(http, "", bundle)
    assert resp.status_code == 200, resp.text
    statuses = [e["response"]["status"] for e in resp.json()["entry"]]
    assert statuses == ["200 OK", "204 No Content", "201 Created", "200 OK"]
    assert (await http.get(f"Patient/{pid}")).json()["meta"]["versionId"] == "2"
    assert_outcome(await http.get(f"Patient/{doomed}"), 410)
    obs_loc = resp.json()["entry"][2]["response"]["location"]
    obs = (await http.get("/".join(obs_loc.split("/")[:2]))).json()
    assert obs["subject"] == {"reference": f"Patient/{pid}"}

    twice = transaction(
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
        {
            "resource": {"resourceType": "Patient", "id": pid},
            "request": {"method": "PUT", "url": f"Patient/{pid}"},
        },
    )
    assert_outcome(await post(http, "", twice), 400)


async def test_batch_entries_succeed_or_fail_alone(http: httpx.AsyncClient) -> None:
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        post_entry({"resourceType": "Patient"}),
        {"request": {"method": "GET", "url": f"Patient/{tag()}"}},
        post_entry({"resourceType": "Patient", "active": True}),
    ]}  # fmt: skip
    resp = await post(http, "", batch)
    assert resp.status_code == 200
    entries = resp.json()["entry"]
    assert resp.json()["type"] == "batch-response"
    assert [e["response"]["status"] for e in entries] == ["201 Created", "404 Not Found", "201 Created"]
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"


# -- resources from other generators load unchanged ---------------------------------------------------------
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
US_CORE_BUNDLE: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {
            "fullUrl": "urn:uuid:7c7a1a5e-0c1d-4d6e-9b85-3f2c8a1b0001",
            "resource": {
                "resourceType": "Patient",
                "meta": {
                    "profile": [f"{US_CORE}/us-core-patient"],
                    "tag": [{"system": "urn:test:source", "code": "synthea"}],
                    "source": "#synthea-3.2",
                },
                "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Generated</div>"},
                "extension": [
                    {
                        "url": f"{US_CORE}/us-core-race",
                        "extension": [
                            {"url": "ombCategory",
                             "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3"}},
                            {"url": "text", "valueString": "White"},
                        ],
                    },
                    {"url": f"{US_CORE}/us-core-birthsex", "valueCode": "F"},
                    {"url": "http://synthetichealth.github.io/synthea/disability-adjusted-life-years",
                     "valueDecimal": 0.0850},
                ],
                "identifier": [
                    {"system": "https://github.com/synthetichealth/synthea", "value": "unchanged-TAG"},
                    {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                          "code": "MR"}]},
                     "system": "http://hospital.smarthealthit.org", "value": "MR-TAG"},
                ],
                "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Q"], "prefix": ["Ms."]}],
                "gender": "female",
                "birthDate": "1970-01-01",
                "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                              "valueDateTime": "1970-01-01T04:13:00-05:00"}]},
                "address": [{"line": ["1 Main St"], "city": "Springfield", "state": "MA", "country": "US",
                             "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                                            "extension": [{"url": "latitude", "valueDecimal": 42.10},
                                                          {"url": "longitude", "valueDecimal": -72.590}]}]}],
                "multipleBirthBoolean": False,
                "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]}}],
            },
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "fullUrl": "urn:uuid:7c7a1a5e-0c1d-4d6e-9b85-3f2c8a1b0002",
            "resource": {
                "resourceType": "Observation",
                "meta": {"profile": [f"{US_CORE}/us-core-observation-lab"]},
                "status": "final",
                "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}], "text": "Laboratory"}],
                "code": {"coding": [{"system": LOINC, "code": "2160-0"}], "text": "Creatinine"},
                "subject": {"reference": "urn:uuid:7c7a1a5e-0c1d-4d6e-9b85-3f2c8a1b0001"},
                "effectiveDateTime": "2024-05-01T08:00:00-04:00",
                "issued": "2024-05-01T09:12:33.120-04:00",
                "valueQuantity": {"value": 1.50, "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                                  "code": "mg/dL"},
                "referenceRange": [{"low": {"value": 0.60}, "high": {"value": 1.10}}],
                "contained": [{"resourceType": "Practitioner", "id": "perf1", "name": [{"family": "Lab"}]}],
                "performer": [{"reference": "#perf1"}],
            },
            "request": {"method": "POST", "url": "Observation"},
        },
        {
            "fullUrl": "urn:uuid:7c7a1a5e-0c1d-4d6e-9b85-3f2c8a1b0003",
            "resource": {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "contained": [{"resourceType": "Medication", "id": "med1", "code": {"coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}]}}],
                "medicationReference": {"reference": "#med1"},
                "subject": {"reference": "urn:uuid:7c7a1a5e-0c1d-4d6e-9b85-3f2c8a1b0001",
                            "display": "Jane Doe"},
                "authoredOn": "2024-05-02",
                "dosageInstruction": [{"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                                       "doseAndRate": [{"doseQuantity": {"value": 500, "unit": "mg"}}]}],
            },
            "request": {"method": "POST", "url": "MedicationRequest"},
        },
    ],
}  # fmt: skip


def resolved(resource: dict[str, Any], refs: dict[str, str]) -> dict[str, Any]:
    """`resource` as the server must store it: its urn:uuid references replaced by Type/id."""
    text = json.dumps(resource)
    for urn, ref in refs.items():
        text = text.replace(urn, ref)
    return json.loads(text)


def locations(bundle: dict[str, Any], response: dict[str, Any]) -> dict[str, str]:
    """fullUrl -> Type/id, from a transaction response."""
    return {
        e["fullUrl"]: "/".join(r["response"]["location"].split("/")[:2])
        for e, r in zip(bundle["entry"], response["entry"], strict=True)
    }


async def test_other_generators_resources_round_trip_unchanged(http: httpx.AsyncClient) -> None:
    text = json.dumps(US_CORE_BUNDLE).replace("TAG", tag())
    # json.dumps wrote 1.5; the sent text says 1.50 as a lab would (FHIR decimals keep their precision).
    text = text.replace('"value": 1.5,', '"value": 1.50,').replace('"value": 0.6}', '"value": 0.60}')
    sent = json.loads(text)
    resp = await http.post("", content=text, headers={"Content-Type": FHIR})
    assert resp.status_code == 200, resp.text
    refs = locations(sent, resp.json())
    for entry in sent["entry"]:
        read = await http.get(refs[entry["fullUrl"]])
        got, expected = read.json(), resolved(entry["resource"], refs)
        assert without_meta(got) == without_meta(expected)
        assert got["meta"] == {
            **expected.get("meta", {}),
            "versionId": "1",
            "lastUpdated": got["meta"]["lastUpdated"],
        }
        if expected["resourceType"] == "Observation":
            assert '"value": 1.50' in read.text and '"value": 0.60' in read.text


async def test_synthetic_ehr_bundles_load_unchanged_and_idempotently(http: httpx.AsyncClient) -> None:
    from datetime import date

    from careflow.fhir.synthetic import generate

    seed = uuid.uuid4().int % 1_000_000 + 1000
    staff, patient = generate(seed, 1, date(2025, 1, 1))
    staff_types = {"Practitioner", "PractitionerRole", "Organization"}
    for bundle in (staff, patient):
        resp = await post(http, "", bundle)
        assert resp.status_code == 200, resp.text[:500]
        # The patient Bundle repeats the staff it references as conditional creates: found, not created.
        seen = {
            (e["resource"]["resourceType"] in staff_types and bundle is patient, r["response"]["status"])
            for e, r in zip(bundle["entry"], resp.json()["entry"], strict=True)
        }
        assert seen == (
            {(False, "201 Created"), (True, "200 OK")} if bundle is patient else {(False, "201 Created")}
        )
        refs = locations(bundle, resp.json())
        for entry in bundle["entry"]:
            got = (await http.get(refs[entry["fullUrl"]])).json()
            expected = resolved(entry["resource"], refs)
            assert without_meta(got) == without_meta(expected)
            assert got["meta"]["tag"] == expected["meta"]["tag"]
    again = (await post(http, "", patient)).json()
    assert {e["response"]["status"] for e in again["entry"]} == {"200 OK"}

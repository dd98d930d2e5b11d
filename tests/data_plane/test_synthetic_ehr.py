"""The synthetic EHR: valid R4B resources, byte-identical for a seed, clinically coherent."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import cache
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from careflow.audit.export import export_since
from careflow.audit.trail import PostgresAuditTrail, verify
from careflow.config import Settings
from careflow.fhir import codes as c
from careflow.fhir.client import FhirClient
from careflow.fhir.synthetic import SyntheticEhr, generate, generate_ehr, patient_bundle, staff_bundle
from careflow.net import free_port
from careflow.security.logging import configure_logging
from starters.clients.seed import BundleLoader
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 27)
NOW = datetime.combine(AS_OF, time(), UTC)
SEED = 20261127
PATIENTS = 60
CLI = (sys.executable, "-m", "starters", "seed", "ehr")


@pytest.fixture(scope="module")
def ehr() -> SyntheticEhr:
    return generate_ehr(SEED, PATIENTS, AS_OF)


@cache
def r4b_model(resource_type: str) -> Any:
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)


def resources(bundle: dict[str, Any], rtype: str | None = None) -> Iterator[dict[str, Any]]:
    for entry in bundle["entry"]:
        if rtype is None or entry["resource"]["resourceType"] == rtype:
            yield entry["resource"]


def by_url(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["fullUrl"]: e["resource"] for e in bundle["entry"]}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def loinc(obs: dict[str, Any]) -> str:
    return str(obs["code"]["coding"][0]["code"])


def coded(resource: dict[str, Any], path: str, system: str) -> list[str]:
    return [cd["code"] for cd in resource[path]["coding"] if cd["system"] == system]


def condition_key(cond: dict[str, Any]) -> str:
    icd = coded(cond, "code", c.ICD10CM)[0]
    return next(k for k, v in c.CONDITIONS.items() if v.icd10 == icd)


def references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                yield v
            else:
                yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)


def test_every_resource_validates_as_r4b_in_transaction_bundles(ehr: SyntheticEhr) -> None:
    assert len(ehr.bundles) == PATIENTS + 1
    seen_types: set[str] = set()
    for n, bundle in enumerate(ehr.bundles):
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        if n < 3:  # the Bundle model validates its entries again: a few suffice
            r4b_model("Bundle").model_validate(bundle)
        urls = by_url(bundle)
        assert len(urls) == len(bundle["entry"])
        for entry in bundle["entry"]:
            resource = entry["resource"]
            seen_types.add(resource["resourceType"])
            r4b_model(resource["resourceType"]).model_validate(resource)
            assert entry["fullUrl"].startswith("urn:uuid:")
            synthetic = [i["value"] for i in resource["identifier"] if i["system"] == c.SYNTHETIC_ID]
            assert entry["request"] == {
                "method": "POST",
                "url": resource["resourceType"],
                "ifNoneExist": f"identifier={c.SYNTHETIC_ID}|{synthetic[0]}",
            }
            # every reference resolves inside the same Bundle
            assert set(references(resource)) <= set(urls), resource["resourceType"]
    assert seen_types == {
        "Organization", "Practitioner", "PractitionerRole", "Patient", "Coverage", "Condition",
        "AllergyIntolerance", "Encounter", "Observation", "Procedure", "MedicationRequest", "ServiceRequest",
    }  # fmt: skip


def digest(bundles: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(bundles, sort_keys=False).encode()).hexdigest()


def test_same_seed_is_byte_identical_in_another_process(ehr: SyntheticEhr) -> None:
    code = (
        "import hashlib, json, datetime\n"
        "from careflow.fhir.synthetic import generate\n"
        f"b = generate({SEED}, {PATIENTS}, datetime.date(2026, 11, 27))\n"
        "print(hashlib.sha256(json.dumps(b, sort_keys=False).encode()).hexdigest())\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == digest(ehr.bundles)
    assert digest(generate(SEED + 1, 3, AS_OF)) != digest(generate(SEED, 3, AS_OF))
    # patient k does not depend on how many patients were generated
    assert generate(SEED, 3, AS_OF) == ehr.bundles[:4]


def observations(bundle: dict[str, Any], code: str, encounter_class: str | None = "AMB") -> list[float]:
    classes = {
        url: r["class"]["code"] for url, r in by_url(bundle).items() if r["resourceType"] == "Encounter"
    }
    return [
        float(o["valueQuantity"]["value"])
        for o in resources(bundle, "Observation")
        if loinc(o) == code
        and (encounter_class is None or classes[o["encounter"]["reference"]] == encounter_class)
    ]


def test_ckd_patients_have_a_chronically_raised_creatinine_baseline(ehr: SyntheticEhr) -> None:
    ckd = non_ckd = 0
    for profile, bundle in zip(ehr.profiles, ehr.bundles[1:], strict=True):
        values = observations(bundle, "2160-0")
        if not values:
            continue
        upper = c.SEX_RANGES[("creatinine", profile.sex)][1]
        if "ckd3" in profile.conditions:
            ckd += 1
            # every outpatient value, not only an acute spike, sits above the reference range
            assert min(values) > upper, (profile.index, values)
            cond = next(r for r in resources(bundle, "Condition") if condition_key(r) == "ckd3")
            assert coded(cond, "code", c.ICD10CM) == ["N18.30"] and coded(cond, "code", c.SNOMED) == [
                "433144002"
            ]
        else:
            non_ckd += 1
            assert statistics.median(values) <= upper, (profile.index, values)
    assert ckd >= 3 and non_ckd >= 3


def test_diabetic_patients_have_raised_hba1c_and_glucose(ehr: SyntheticEhr) -> None:
    diabetic = 0
    for profile, bundle in zip(ehr.profiles, ehr.bundles[1:], strict=True):
        a1c = observations(bundle, "4548-4")
        if "diabetes" in profile.conditions:
            diabetic += 1
            assert a1c and statistics.median(a1c) >= 6.5, (profile.index, a1c)
            assert statistics.median(observations(bundle, "2345-7")) > 125
        else:
            assert all(v < 6.5 for v in a1c), (profile.index, a1c)
    assert diabetic >= 3


def test_labs_carry_loinc_units_reference_ranges_and_interpretation(ehr: SyntheticEhr) -> None:
    by_loinc = {lab.loinc: lab for lab in c.LABS.values()}
    seen: set[str] = set()
    for bundle in ehr.bundles[1:]:
        for obs in resources(bundle, "Observation"):
            if "component" in obs:  # blood pressure panel
                assert loinc(obs) == "85354-9"
                assert [loinc(cm) for cm in obs["component"]] == ["8480-6", "8462-4"]
                seen.update(["8480-6", "8462-4"])
                continue
            lab = by_loinc[loinc(obs)]
            seen.add(lab.loinc)
            q = obs["valueQuantity"]
            assert (q["unit"], q["system"], q["code"]) == (lab.unit, c.UCUM, lab.unit)
            ref = obs["referenceRange"][0]
            value, low, high = q["value"], ref.get("low", {}).get("value"), ref.get("high", {}).get("value")
            flag = obs["interpretation"][0]["coding"][0]["code"]
            expected = (
                "H" if high is not None and value > high else "L" if low is not None and value < low else "N"
            )
            assert flag == expected
            assert obs["category"][0]["coding"][0]["code"] == lab.category
    assert seen == {lab.loinc for lab in c.LABS.values()}


def test_medications_match_the_conditions_they_treat(ehr: SyntheticEhr) -> None:
    by_rxnorm = {m.rxnorm: m for m in c.MEDICATIONS.values()}
    for profile, bundle in zip(ehr.profiles, ehr.bundles[1:], strict=True):
        urls = by_url(bundle)
        prescribed: set[str] = set()
        for rx in resources(bundle, "MedicationRequest"):
            med = by_rxnorm[coded(rx, "medicationCodeableConcept", c.RXNORM)[0]]
            prescribed.add(med.key)
            reasons = [condition_key(urls[r["reference"]]) for r in rx["reasonReference"]]
            assert reasons and all(med.key in c.INDICATIONS[k] for k in reasons), (med.key, reasons)
            assert set(reasons) <= set(profile.conditions)
            onset = max(ts(urls[r["reference"]]["onsetDateTime"]) for r in rx["reasonReference"])
            assert onset <= ts(rx["authoredOn"]) < NOW
        for cond in profile.conditions:
            if cond == "obesity" or (cond == "rheumatoid_arthritis" and "ckd3" in profile.conditions):
                continue  # obesity alone is not drug-treated here; methotrexate is avoided in CKD
            assert prescribed & c.INDICATIONS[cond], (profile.index, cond, prescribed)
        if "ckd3" in profile.conditions:
            assert not prescribed & c.NEPHROTOXIC
        if "diabetes" in profile.conditions:
            assert "metformin" in prescribed
        if "heart_failure" in profile.conditions:
            assert {"furosemide", "carvedilol"} <= prescribed


def test_dates_are_consistent(ehr: SyntheticEhr) -> None:
    discharges = 0
    for profile, bundle in zip(ehr.profiles, ehr.bundles[1:], strict=True):
        urls = by_url(bundle)
        patient = urls[profile.patient_url]
        birth = datetime.combine(date.fromisoformat(patient["birthDate"]), time(), UTC)
        assert birth.date() == profile.birth_date
        for cond in resources(bundle, "Condition"):
            assert birth < ts(cond["onsetDateTime"]) <= ts(cond["recordedDate"]) < NOW
            if "abatementDateTime" in cond:
                assert ts(cond["onsetDateTime"]) < ts(cond["abatementDateTime"]) < NOW
        periods = {}
        for enc in resources(bundle, "Encounter"):
            start, end = ts(enc["period"]["start"]), ts(enc["period"]["end"])
            assert birth < start < end < NOW
            if enc["class"]["code"] == "IMP":
                discharges += 1
                assert enc["length"]["value"] == (end.date() - start.date()).days >= 2
                assert enc["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] in c.DISPOSITIONS
                assert urls[enc["diagnosis"][0]["condition"]["reference"]]["resourceType"] == "Condition"
        for url, r in urls.items():
            if r["resourceType"] == "Encounter":
                periods[url] = (ts(r["period"]["start"]), ts(r["period"]["end"]))
        stays = sorted(periods.values())
        assert all(a[1] < b[0] for a, b in itertools.pairwise(stays)), "encounters overlap"
        for obs in resources(bundle, "Observation"):
            start, end = periods[obs["encounter"]["reference"]]
            assert start <= ts(obs["effectiveDateTime"]) <= end
        for proc in resources(bundle, "Procedure"):
            start, end = periods[proc["encounter"]["reference"]]
            assert start <= ts(proc["performedDateTime"]) <= end
        for allergy in resources(bundle, "AllergyIntolerance"):
            assert birth < ts(allergy["recordedDate"]) < NOW
        coverage = next(resources(bundle, "Coverage"))
        assert birth.date() < date.fromisoformat(coverage["period"]["start"]) < AS_OF
    assert discharges >= 5
    # some discharges happened in the 24 h before as_of (the nightly risk-scoring window)
    recent = [
        enc
        for b in ehr.bundles[1:]
        for enc in resources(b, "Encounter")
        if enc["class"]["code"] == "IMP" and (NOW - ts(enc["period"]["end"])).total_seconds() < 24 * 3600
    ]
    assert recent


def test_orders_needing_prior_authorization(ehr: SyntheticEhr) -> None:
    found: dict[str, int] = {}
    for profile, bundle in zip(ehr.profiles, ehr.bundles[1:], strict=True):
        urls = by_url(bundle)
        orders = [
            r for r in resources(bundle) if any(t["code"] == c.TAG_PRIOR_AUTH for t in r["meta"]["tag"])
        ]
        assert len(orders) == len(profile.prior_auth_orders)
        for order in orders:
            [order_id] = [i["value"] for i in order["identifier"] if i["system"] == c.ORDER_ID]
            kind = order_id.rsplit("-", 1)[1]
            found[kind] = found.get(kind, 0) + 1
            assert urls[order["insurance"][0]["reference"]]["resourceType"] == "Coverage"
            assert (NOW - ts(order["authoredOn"])).days <= 15
            reasons = {condition_key(urls[r["reference"]]) for r in order["reasonReference"]}
            if order["resourceType"] == "MedicationRequest":
                med = c.MEDICATIONS[kind]
                assert med.prior_auth and coded(order, "medicationCodeableConcept", c.RXNORM) == [med.rxnorm]
                assert c.PRIOR_AUTH_MEDICATIONS[kind] in reasons
            else:
                cpt = coded(order, "code", c.CPT)
                assert cpt == [{"mri_lumbar_spine": "72148", "total_knee_arthroplasty": "27447"}[kind]]
                assert c.PRIOR_AUTH_SERVICES[kind][2] in reasons
    assert set(found) == {"semaglutide", "adalimumab", "mri_lumbar_spine", "total_knee_arthroplasty"}, found


def npi_valid(npi: str) -> bool:
    digits = [int(d) for d in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 1 else d
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_staff_roles_and_shared_references(ehr: SyntheticEhr) -> None:
    staff = ehr.bundles[0]
    assert staff == staff_bundle(SEED)
    roles = [r["code"][0]["coding"][0]["code"] for r in resources(staff, "PractitionerRole")]
    for role in ("hospitalist", "pa-staff", "pa-supervisor", "charge-nurse", "department-chief"):
        assert role in roles
    npis = [
        i["value"] for p in resources(staff, "Practitioner") for i in p["identifier"] if i["system"] == c.NPI
    ]
    assert len(set(npis)) == len(npis) and all(npi_valid(n) for n in npis)
    payers = {o["name"] for o in resources(staff, "Organization")}
    assert {"Aetna", "UnitedHealthcare", "Blue Cross Blue Shield"} <= payers
    # a patient Bundle repeats the staff it references with the same fullUrl and conditional create
    staff_entries = {e["fullUrl"]: e for e in staff["entry"]}
    for bundle in ehr.bundles[1:]:
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] in ("Practitioner", "Organization"):
                assert entry == staff_entries[entry["fullUrl"]]


def test_cli_writes_the_same_bundles_for_the_same_seed(tmp_path: Path) -> None:
    def run(out: Path) -> bytes:
        subprocess.run(
            [*CLI, "--patients", "4", "--seed", "77", "--as-of", AS_OF.isoformat(), "--out", str(out)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )
        return out.read_bytes()

    first, second = run(tmp_path / "a.ndjson"), run(tmp_path / "b.ndjson")
    assert first == second
    assert [json.loads(line) for line in first.splitlines()] == generate(77, 4, AS_OF)


# -- loading into the sandbox FHIR server (the careflow API process, /fhir/r4) ------------------------
@dataclass
class FhirApi:
    base_url: str
    log: Path


@pytest_asyncio.fixture(scope="module")
async def fhir_api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FhirApi]:
    port = free_port()
    log = tmp_path_factory.mktemp("fhir-api") / "api.log"
    env = dict(os.environ, CAREFLOW_API_PORT=str(port), CAREFLOW_LOG_LEVEL="DEBUG")
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "starters", "api", env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}/fhir/r4"

    async def ready() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"the API exited: {log.read_text()[-2000:]}")
        async with httpx.AsyncClient() as http:
            try:
                return (await http.get(f"{base}/metadata")).status_code == 200
            except httpx.TransportError:
                return False

    try:
        await wait_until(ready, timeout=60, what="the careflow API's FHIR endpoint")
        yield FhirApi(base, log)
    finally:
        proc.terminate()
        await proc.wait()


async def patients_with_mrn(base: str, mrn: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{base}/Patient", params={"identifier": f"{c.MRN}|{mrn}"})
        resp.raise_for_status()
        return [e["resource"] for e in resp.json().get("entry", [])]


async def test_seed_cli_loads_and_reseeding_creates_nothing(fhir_api: FhirApi, database_url: str) -> None:
    seed = 4242
    env = dict(os.environ, CAREFLOW_FHIR_BASE_URL=fhir_api.base_url)
    args = [*CLI, "--patients", "3", "--seed", str(seed), "--as-of", AS_OF.isoformat()]

    def seed_once() -> str:
        done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stderr

    conn = await asyncpg.connect(database_url)
    try:
        audited_before = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE actor = 'careflow-seed'"
        )
        first = await asyncio.to_thread(seed_once)
        bundles = generate(seed, 3, AS_OF)
        total = sum(len(b["entry"]) for b in bundles)
        # everything is created once; a patient Bundle's copies of staff entries match existing ones
        shared = sum(
            1
            for b in bundles[1:]
            for e in b["entry"]
            if e["resource"]["resourceType"] in ("Practitioner", "Organization")
        )
        assert f"({total} entries, {total - shared} created)" in first, first
        for index in range(3):
            [patient] = await patients_with_mrn(fhir_api.base_url, f"SYN{seed}-{index:06d}")
            assert patient["generalPractitioner"][0]["reference"].startswith("Practitioner/")

        second = await asyncio.to_thread(seed_once)
        assert f"({total} entries, 0 created)" in second
        for index in range(3):
            assert len(await patients_with_mrn(fhir_api.base_url, f"SYN{seed}-{index:06d}")) == 1
        # one PHI-write audit event per transaction (staff + 3 patients), twice; patient ids recorded
        rows = await conn.fetch(
            "SELECT event_type, patient_id FROM audit_events WHERE actor = 'careflow-seed' ORDER BY id"
        )
        new = rows[audited_before:]
        assert len(new) == 2 * 4
        assert all(r["event_type"] == "phi-write" for r in new)
        assert sum(r["patient_id"] is not None for r in new) == 2 * 3
        assert (await verify(conn)).ok
    finally:
        await conn.close()


async def test_phi_canary_never_reaches_audit_rows_or_logs(
    fhir_api: FhirApi, database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    canary = f"Canary{uuid.uuid4().hex[:12]}"
    seed = 515151
    _, bundle = patient_bundle(seed, 0, AS_OF)
    patient = next(resources(bundle, "Patient"))
    patient["name"] = [{"use": "official", "family": canary, "given": [f"{canary}Given"]}]

    configure_logging("DEBUG", "json")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with FhirClient(fhir_api.base_url, audit=PostgresAuditTrail(pool), actor="test-seed") as fhir:
            loader = BundleLoader(fhir.transaction)
            await loader.post(0, staff_bundle(seed))
            await loader.post(1, bundle)
            [stored] = await patients_with_mrn(fhir_api.base_url, f"SYN{seed}-000000")
            assert stored["name"][0]["family"] == canary  # the canary really went through the EHR
            via_client = await fhir.read("Patient", stored["id"])
            assert via_client["name"][0]["family"] == canary
        rows = [r[0] for r in await pool.fetch("SELECT row_to_json(a)::text FROM audit_events a")]
        assert any(stored["id"] in r for r in rows)  # the reads and the write were audited, by id
        assert not [r for r in rows if canary in r]
        exported = [json.dumps(e) async for e in export_since(pool, datetime(2000, 1, 1, tzinfo=UTC))]
        assert exported and not [e for e in exported if canary in e]
    finally:
        await pool.close()
        configure_logging(Settings().log_level, Settings().log_format)
    logs = capfd.readouterr()
    assert "seed.bundle_loaded" in logs.out + logs.err  # the capture really holds this process's logs
    assert canary not in logs.out + logs.err
    api_log = fhir_api.log.read_text()
    assert "POST /fhir/r4/" in api_log and canary not in api_log

"""Synthetic EHR seeding rate: patients/s generated, and loaded into the FHIR server when one answers.

Generation is measured in-process (a pure function of seed, patient count and reference date).
Loading goes through FhirClient (audited into CAREFLOW_DATABASE_URL's audit trail, as `careflow seed
ehr` does) to `--fhir-base-url` (default CAREFLOW_FHIR_BASE_URL, the sandbox FHIR server of `careflow
dev up`) when its /metadata answers; otherwise the loading line says why it was skipped.  A second
load of the same seed measures the re-seed path (conditional creates: nothing created).
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import date

import httpx

from careflow.audit.trail import PostgresAuditTrail
from careflow.config import load_settings
from careflow.db.pool import create_pool
from careflow.fhir.client import FhirClient
from careflow.fhir.synthetic import iter_patients, staff_bundle
from careflow.security.logging import configure_logging
from starters.clients.seed import SEED_ACTOR, BundleLoader

AS_OF = date(2026, 11, 27)


def measure_generation(seed: int, patients: int) -> None:
    t0 = time.perf_counter()
    entries = size = 0
    for _, bundle in iter_patients(seed, patients, AS_OF):
        entries += len(bundle["entry"])
        size += len(json.dumps(bundle, separators=(",", ":")))
    elapsed = time.perf_counter() - t0
    print(f"generate : {patients / elapsed:8.1f} patients/s  ({entries / elapsed:8.0f} resources/s)")
    per = f"{entries / patients:8.1f} resources and {size / patients / 1024:6.1f} KiB"
    print(f"           {per} per patient Bundle")


async def measure_loading(base_url: str, seed: int, patients: int, concurrency: int) -> None:
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            (await http.get(f"{base_url}/metadata")).raise_for_status()
    except httpx.HTTPError as exc:
        print(f"load     : skipped, no FHIR server at {base_url} ({type(exc).__name__})")
        return
    settings = load_settings()
    pool = await create_pool(settings)
    try:
        trail = PostgresAuditTrail(pool)
        async with FhirClient(base_url, audit=trail, actor=SEED_ACTOR, timeout=120.0) as fhir:
            for label in ("load    ", "re-seed "):
                loader = BundleLoader(fhir.transaction, concurrency=concurrency)
                await loader.post(0, staff_bundle(seed))
                t0 = time.perf_counter()
                stats = await loader.load((b for _, b in iter_patients(seed, patients, AS_OF)), first_index=1)
                elapsed = time.perf_counter() - t0
                print(
                    f"{label} : {patients / elapsed:8.1f} patients/s  ({stats.entries / elapsed:8.0f} "
                    f"resources/s, {stats.created} created, concurrency {concurrency})"
                )
    finally:
        await pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--load-patients", type=int, default=50)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--fhir-base-url", default=None)
    args = ap.parse_args()
    configure_logging("WARNING", "console")
    measure_generation(args.seed, args.patients)
    base = args.fhir_base_url or load_settings().fhir_base_url
    asyncio.run(measure_loading(base.rstrip("/"), args.seed, args.load_patients, args.concurrency))


if __name__ == "__main__":
    main()

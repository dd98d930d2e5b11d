"""FHIR read latency through careflow's FhirClient against the sandbox EHR.

Measures, through the client (validation + audit event into the Postgres trail included):

- read: one `read` of a resource (Patient, Encounter, Observation, ... picked at random);
- read, audit off: the same without the audit event (what the hash-chained trail costs per read);
- patient_context: the five types of a prior-authorization context (Patient, Encounter, Condition,
  MedicationRequest, Procedure) read concurrently, against the seed's budget for parallel FHIR reads
  (500 ms, P2: "FHIR context assembly" of the prior-auth pipeline);

and prints p50/p95/p99 and the ratio p95 / budget.  Figures are printed, never asserted.

    python -m bench.fhir_bench              # against the running stack (`make run`): CAREFLOW_FHIR_BASE_URL
    python -m bench.fhir_bench --embedded   # its own Postgres (temp dir) and `careflow api` subprocess

The synthetic EHR (careflow.fhir.synthetic) is loaded first as transaction Bundles (conditional creates:
loading the same seed again creates nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import asyncpg
import httpx

from careflow.audit.trail import PostgresAuditTrail
from careflow.config import load_settings
from careflow.fhir.client import FhirClient
from careflow.fhir.resources import split_reference
from careflow.fhir.synthetic import iter_patients, staff_bundle
from careflow.models.audit import AuditEvent
from careflow.security.logging import configure_logging

ROOT = Path(__file__).resolve().parent.parent
BUDGET_MS = 500.0  # seed budget for parallel FHIR reads
CONTEXT_TYPES = ["Patient", "Encounter", "Condition", "MedicationRequest", "Procedure"]
AS_OF = date(2026, 11, 27)


class _NoAudit:
    """For the comparison line only: what a read costs without its audit event."""

    async def record(self, event: AuditEvent) -> None:
        pass


@contextlib.asynccontextmanager
async def embedded_stack() -> AsyncIterator[tuple[str, str]]:
    """A throwaway Postgres and `careflow api` (uvicorn, one process) serving the sandbox."""
    from careflow.db.embedded import throwaway_postgres
    from careflow.db.migrate import migrate
    from careflow.net import free_port

    async with throwaway_postgres("careflow-fhir-bench-") as (home, dsn):
        api: asyncio.subprocess.Process | None = None
        try:
            await migrate(dsn)
            port = free_port()
            env = {
                **os.environ,
                "CAREFLOW_HOME": str(home),
                "CAREFLOW_DATABASE_URL": dsn,
                "CAREFLOW_API_PORT": str(port),
                "CAREFLOW_LOG_LEVEL": "WARNING",
            }
            api = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "starters", "api", cwd=ROOT, env=env
            )
            base = f"http://127.0.0.1:{port}/fhir/r4"
            async with httpx.AsyncClient() as h:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        if (await h.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("careflow api did not start")
            yield base, dsn
        finally:
            if api is not None:
                api.terminate()
                await asyncio.wait_for(api.wait(), 10)


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def _line(name: str, ms: list[float], budget: float | None = None) -> str:
    p50, p95, p99 = _pct(ms, 50), _pct(ms, 95), _pct(ms, 99)
    text = f"{name:<16} n={len(ms):<5} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   p99 {p99:7.2f} ms"
    if budget is not None:
        text += f"   budget {budget:.0f} ms   p95/budget = {p95 / budget:.3f}"
    return text


async def seed(fhir: FhirClient, seed_value: int, patients: int) -> tuple[list[str], list[str]]:
    """Load the synthetic EHR; return patient ids and every loaded resource as Type/id."""
    await fhir.transaction(staff_bundle(seed_value))
    patient_ids: list[str] = []
    resources: list[str] = []
    for _, bundle in iter_patients(seed_value, patients, AS_OF):
        response = await fhir.transaction(bundle)
        for entry in response["entry"]:
            ref = split_reference(entry["response"]["location"])
            if ref:
                resources.append(f"{ref[0]}/{ref[1]}")
                if ref[0] == "Patient":
                    patient_ids.append(ref[1])
    return patient_ids, resources


async def run(base: str, dsn: str, args: argparse.Namespace) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    assert pool is not None
    rng = random.Random(args.seed)
    try:
        async with FhirClient(base, audit=PostgresAuditTrail(pool), actor="bench-fhir") as fhir:
            t0 = time.perf_counter()
            patients, resources = await seed(fhir, args.seed, args.patients)
            print(
                f"seed: {len(patients)} patients, {len(resources)} resources loaded "
                f"in {time.perf_counter() - t0:.1f} s (conditional creates)"
            )
            for ref in rng.sample(resources, min(20, len(resources))):  # warm-up
                await fhir.read(*ref.split("/"))

            reads: list[float] = []
            for _ in range(args.reads):
                rtype, rid = rng.choice(resources).split("/")
                t = time.perf_counter()
                await fhir.read(rtype, rid)
                reads.append((time.perf_counter() - t) * 1000)

            unaudited: list[float] = []
            async with FhirClient(base, audit=_NoAudit(), actor="bench-fhir") as bare:
                for _ in range(args.reads):
                    rtype, rid = rng.choice(resources).split("/")
                    t = time.perf_counter()
                    await bare.read(rtype, rid)
                    unaudited.append((time.perf_counter() - t) * 1000)

            contexts: list[float] = []
            sizes: list[int] = []
            for _ in range(args.contexts):
                pid = rng.choice(patients)
                t = time.perf_counter()
                ctx = await fhir.patient_context(pid, CONTEXT_TYPES)
                contexts.append((time.perf_counter() - t) * 1000)
                sizes.append(sum(len(v) for v in ctx.values()))
    finally:
        await pool.close()

    print(f"server: {base}")
    print(_line("read", reads))
    print(_line("patient_context", contexts, BUDGET_MS))
    print(_line("read, audit off", unaudited))
    print(
        f"patient_context: {len(CONTEXT_TYPES)} types, {statistics.mean(sizes):.1f} resources each on average"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedded", action="store_true", help="start a throwaway Postgres + careflow api")
    ap.add_argument("--base-url", help="FHIR base URL (default: CAREFLOW_FHIR_BASE_URL)")
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--reads", type=int, default=500)
    ap.add_argument("--contexts", type=int, default=200)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args()
    configure_logging("WARNING", "console")
    if args.embedded:
        async with embedded_stack() as (base, dsn):
            await run(base, dsn, args)
    else:
        settings = load_settings()
        await run(args.base_url or settings.fhir_base_url, settings.database_url, args)


if __name__ == "__main__":
    asyncio.run(main())

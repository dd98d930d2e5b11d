"""Append rate of the hash-chained audit trail, and how fast `verify` walks it.

Self-contained: starts its own embedded Postgres in a temporary folder (or uses --database-url),
migrates a fresh database and measures, as the application role careflow_app:

- one writer, one append at a time (each append is its own committed transaction);
- one process with 4 appends in flight;
- 4 writer processes (tests/support/audit_writer.py, 4 in flight each) appending to one chain;
- `verify` over everything written (rows/s).

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from careflow.audit.trail import PostgresAuditTrail, verify
from careflow.db.embedded import throwaway_postgres
from careflow.db.migrate import migrate
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType

ROOT = Path(__file__).resolve().parent.parent


def sample(i: int) -> AuditEvent:
    return AuditEvent(
        event_type=AuditEventType.PHI_ACCESS,
        actor="bench",
        action=AuditAction.READ,
        patient_id=f"pat-{i % 100}",
        resource_type="Observation",
        resource_id=f"obs-{i}",
        request_id=f"req-{i}",
    )


async def single_writer(dsn: str, n: int, in_flight: int) -> float:
    pool = await asyncpg.create_pool(dsn, min_size=in_flight, max_size=in_flight)
    trail = PostgresAuditTrail(pool)
    todo = iter(range(n))

    async def lane() -> None:
        for i in todo:
            await trail.record(sample(i))

    t0 = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    elapsed = time.perf_counter() - t0
    await pool.close()
    return n / elapsed


async def writer_processes(dsn: str, processes: int, per_process: int) -> float:
    args = ("-m", "tests.support.audit_writer", dsn, str(per_process))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, *args, f"b{k}", cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for k in range(processes)
    ]
    for p in procs:  # all connected before any appends
        assert p.stdout is not None
        await p.stdout.readline()
    outs = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    assert all(p.returncode == 0 for p in procs), outs
    # Timed from the rows themselves (first to last append), so interpreter start-up is not counted.
    conn = await asyncpg.connect(dsn)
    try:
        span = await conn.fetchval(
            "SELECT extract(epoch FROM max(occurred_at) - min(occurred_at)) FROM audit_events"
            " WHERE actor LIKE 'worker-b%'"
        )
    finally:
        await conn.close()
    return processes * per_process / float(span)


async def run(superuser_dsn: str, n: int) -> None:
    await migrate(superuser_dsn)
    app_dsn = superuser_dsn.replace("://postgres@", "://careflow_app@")
    one = await single_writer(app_dsn, n, 1)
    four = await single_writer(app_dsn, n, 4)
    procs = await writer_processes(app_dsn, 4, n)
    conn = await asyncpg.connect(app_dsn)
    try:
        t0 = time.perf_counter()
        result = await verify(conn)
        verify_rate = result.rows_checked / (time.perf_counter() - t0)
    finally:
        await conn.close()
    print(f"audit append, 1 writer, 1 in flight     : {one:8.0f} events/s")
    print(f"audit append, 1 process, 4 in flight    : {four:8.0f} events/s")
    print(f"audit append, 4 processes, 4 in flight  : {procs:8.0f} events/s (one chain)")
    rows = f"({result.rows_checked} rows, ok={result.ok})"
    print(f"audit verify                            : {verify_rate:8.0f} rows/s {rows}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000, help="events per writer")
    ap.add_argument("--database-url", help="superuser URL of a Postgres to use instead of an embedded one")
    args = ap.parse_args()
    if args.database_url:
        base = args.database_url.rsplit("/", 1)[0]
        admin = await asyncpg.connect(f"{base}/postgres")
        name = f"audit_bench_{uuid.uuid4().hex[:8]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        await run(f"{base}/{name}", args.events)
        return
    async with throwaway_postgres("careflow-audit-bench-", "audit_bench") as (_, dsn):
        await run(dsn, args.events)


if __name__ == "__main__":
    asyncio.run(main())

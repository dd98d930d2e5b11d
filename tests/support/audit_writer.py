"""A separate audit-writing process: `python -m tests.support.audit_writer DSN COUNT TAG`.

Connects, prints READY, waits for a line on stdin (so several writers start appending at the same
moment), then appends COUNT events through PostgresAuditTrail (a few at a time, like a worker with
concurrent activities) and prints the number written.  Tests and bench/audit_bench.py start several.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from careflow.audit.trail import PostgresAuditTrail
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType

IN_FLIGHT = 4


async def write(dsn: str, count: int, tag: str) -> int:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=IN_FLIGHT)
    trail = PostgresAuditTrail(pool)
    queue = iter(range(count))
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.readline)

    async def lane() -> int:
        written = 0
        for i in queue:
            await trail.record(
                AuditEvent(
                    event_type=AuditEventType.PHI_ACCESS,
                    actor=f"worker-{tag}",
                    action=AuditAction.READ,
                    patient_id=f"pat-{i % 17}",
                    resource_type="Observation",
                    resource_id=f"{tag}-{i}",
                    request_id=f"req-{tag}-{i}",
                )
            )
            written += 1
        return written

    try:
        return sum(await asyncio.gather(*(lane() for _ in range(IN_FLIGHT))))
    finally:
        await pool.close()


if __name__ == "__main__":
    dsn, count, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    print(asyncio.run(write(dsn, count, tag)))

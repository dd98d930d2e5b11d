"""Clinical work is never silently lost: prior auths and lab results while the stack is killed under them.

Needs the stack after `make run` (seeded EHR, seed 7).  The bench starts `--orders` prior-auth
workflows on careflow-main (ids `prior-auth-<order>-c<run>-<i>`, the seeded orders reused) and sends
`--results` critical potassium results over MLLP (resending until the listener answers AA, as a lab
system does), while a schedule kills, one at a time, a worker (SIGKILL and SIGTERM), the API
(SIGTERM), the Temporal dev server (SIGKILL) and Postgres (SIGKILL and SIGTERM, whose smart shutdown
waits for every pooled session).  After each kill it waits `--outage` seconds, then runs
`careflow dev up --no-check` and measures the outage: from the kill until the stack is up again.

Once every kill is done, it waits for every prior auth to reach review and every result to alert
its physician, and prints completed / expected, duplicate FHIR writes (draft DocumentReferences,
review Tasks, alert Tasks: more than one resource for one workflow step), the audit chain's verdict
and the longest outage survived.  Goal: 100 % completed, 0 duplicates, chain intact.
Afterwards it acknowledges its alerts and terminates its prior auths (they would wait days).

    python -m bench.chaos --orders 30 --results 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from temporalio.client import Client
from temporalio.service import RPCError

from bench.lab_alert_bench import oru
from bench.prior_auth_bench import held_by_ehr
from careflow import task_queues
from careflow.audit.trail import verify
from careflow.config import Settings, load_settings
from careflow.db.pool import create_pool
from careflow.fhir.synthetic import generate_ehr
from careflow.hl7.mllp import Frame, MllpFramer, wrap
from careflow.hl7.oru import parse_oru
from careflow.idempotency import step_key
from careflow.labs.normalise import results_from_oru
from careflow.models.lab_alert import AlertAck
from careflow.models.lab_alert import workflow_id as lab_workflow_id
from careflow.models.prior_auth import PriorAuthInput
from careflow.models.prior_auth import workflow_id as pa_workflow_id
from careflow.security.logging import configure_logging
from careflow.security.temporal import connect
from starters.clients.prior_auth import synthetic_orders
from starters.devstack.stack import DevStack
from workflows.lab_alert import LabResultAlertWorkflow
from workflows.prior_auth import PriorAuthWorkflow

# (component, signal): what the schedule kills, in turn
KILLS = [
    ("worker", signal.SIGKILL),
    ("api", signal.SIGTERM),
    ("temporal", signal.SIGKILL),
    ("postgres", signal.SIGKILL),
    ("worker", signal.SIGTERM),
    ("postgres", signal.SIGTERM),
]
REVIEW_OR_LATER = (
    "awaiting_review",
    "regenerating",
    "submitting",
    "pended",
    "approved",
    "denied",
    "rejected",
)


@dataclass
class Chaos:
    outages: list[tuple[str, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _pid_of(stack: DevStack, component: str) -> int | None:
    if component == "postgres":
        return stack.pg.pid()
    if component == "worker":
        names = stack.worker_names()
        return stack.pid_of(names[0]) if names else None
    return stack.pid_of(component)


async def chaos(stack: DevStack, every: float, outage: float, rounds: int) -> Chaos:
    """Kill one component every `every` seconds, each kind in KILLS `rounds` times; after each kill
    bring the stack back with `careflow dev up` and time the outage."""
    out = Chaos()
    for turn in range(1, rounds * len(KILLS) + 1):
        await asyncio.sleep(every)
        component, sig = KILLS[(turn - 1) % len(KILLS)]
        pid = _pid_of(stack, component)
        if pid is None:
            out.failures.append(f"{component}: not running before its kill")
            continue
        killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            # Our components lead their own process groups; Postgres's postmaster ends its children.
            os.killpg(pid, sig) if component != "postgres" else os.kill(pid, sig)
        print(f"  kill {turn}: {sig.name} {component} (pid {pid})", flush=True)
        await asyncio.sleep(outage)
        up = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "starters", "dev", "up", "--no-check"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if up.returncode != 0:
            out.failures.append(f"dev up after {component}: {up.stderr.strip()[-300:]}")
        out.outages.append((f"{sig.name} {component}", time.monotonic() - killed_at))
    return out


async def seeded(settings: Settings, seed: int, patients: int) -> tuple[list[str], list[str]]:
    """(prior-auth orders the EHR holds, patients' MRNs) of `make run`'s seeded synthetic EHR."""
    pool = await create_pool(settings)
    try:
        orders = await held_by_ehr(settings, pool, [o.order_id for o in synthetic_orders(seed, patients)])
    finally:
        await pool.close()
    if not orders:
        raise SystemExit(f"the EHR holds none of seed {seed}'s orders: run `make run` first")
    return orders, [p.mrn for p in generate_ehr(seed, patients, datetime.now(UTC).date()).profiles]


async def start_prior_auths(
    settings: Settings, orders: list[str], n: int, run: str, spread: float
) -> list[str]:
    """Start each workflow, retrying while Temporal is down (as the EHR resends an order event)."""
    ids = [pa_workflow_id(f"{orders[i % len(orders)]}-c{run}-{i}") for i in range(n)]

    async def start(i: int, wid: str) -> None:
        while True:
            try:
                client = await connect(settings)
                await client.start_workflow(
                    PriorAuthWorkflow.run,
                    PriorAuthInput(order_id=orders[i % len(orders)]),
                    id=wid,
                    task_queue=task_queues.MAIN,
                )
                return
            except RPCError as exc:
                if "already started" in str(exc).lower():
                    return
            except RuntimeError:  # connection refused: Temporal is down
                pass
            await asyncio.sleep(2)

    for i, wid in enumerate(ids):
        await start(i, wid)
        await asyncio.sleep(spread / n)  # arriving all along the chaos schedule
    return ids


async def send_results(settings: Settings, mrns: list[str], m: int, run: str, spread: float) -> list[str]:
    """Send each result until it is acknowledged AA (no ACK, a closed connection: resend)."""
    keys = []
    for n in range(m):
        msg = oru(mrns[n % len(mrns)], n, run)
        [result] = results_from_oru(parse_oru(msg), datetime.now(UTC))
        keys.append(result.result_key)
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(settings.hl7_host, settings.hl7_port), 5
                )
                writer.write(wrap(msg))
                await writer.drain()
                framer, ack = MllpFramer(), b""
                while not ack:
                    data = await asyncio.wait_for(reader.read(65536), 15)
                    if not data:
                        break
                    ack = next((f.payload for f in framer.feed(data) if isinstance(f, Frame)), b"")
                writer.close()
                if b"MSA|AA|" in ack:
                    break
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(1)
        await asyncio.sleep(spread / m)
    return keys


async def wait_done(pool_dsn: str, pa_ids: list[str], lab_keys: list[str], timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    reviewed = alerted = 0
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(pool_dsn, timeout=5)
            try:
                reviewed = await conn.fetchval(
                    "SELECT count(*) FROM pa_metrics"
                    " WHERE workflow_id = ANY($1) AND draft_ready_at IS NOT NULL",
                    pa_ids,
                )
                alerted = await conn.fetchval(
                    "SELECT count(*) FROM notifications WHERE dedup_key = ANY($1)",
                    [step_key(lab_workflow_id(k), "alert-physician") for k in lab_keys],
                )
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError):
            pass
        if reviewed == len(pa_ids) and alerted == len(lab_keys):
            break
        await asyncio.sleep(2)
    return reviewed, alerted


async def duplicates(conn: asyncpg.Connection, run: str, lab_keys: list[str]) -> dict[str, int]:
    """Workflow steps with more than one FHIR resource, and notification keys sent twice."""
    steps = await conn.fetchval(
        "SELECT count(*) FROM (SELECT value FROM fhir_identifiers i JOIN fhir_resources r"
        " ON r.resource_type = i.resource_type AND r.id = i.id AND NOT r.deleted"
        " WHERE i.value LIKE $1 GROUP BY i.resource_type, i.value HAVING count(*) > 1) d",
        f"%-c{run}-%",
    )
    alerts = await conn.fetchval(
        "SELECT count(*) FROM (SELECT i.value FROM fhir_identifiers i JOIN fhir_resources r"
        " ON r.resource_type = i.resource_type AND r.id = i.id AND NOT r.deleted"
        " WHERE i.value = ANY($1) GROUP BY i.value HAVING count(*) > 1) d",
        [f"{k}-{level}" for k in lab_keys for level in ("physician", "charge_nurse", "chief")],
    )
    # (notifications cannot repeat: their dedup key, workflow id + level, is the table's primary key)
    return {"duplicate step resources": steps, "duplicate alert Tasks": alerts}


async def cleanup(settings: Settings, pa_ids: list[str], lab_keys: list[str]) -> None:
    client: Client = await connect(settings)
    for k in lab_keys:
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(lab_workflow_id(k)).signal(
                LabResultAlertWorkflow.acknowledge, AlertAck(by="chaos-bench")
            )
    for wid in pa_ids:
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(wid).terminate("chaos bench done")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--orders", type=int, default=30)
    ap.add_argument("--results", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--every", type=float, default=12.0, help="seconds between kills")
    ap.add_argument("--outage", type=float, default=5.0, help="seconds a killed component stays down")
    ap.add_argument("--rounds", type=int, default=1, help="times each kind of kill is done")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for completion")
    args = ap.parse_args()
    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    stack = DevStack(settings, say=lambda m: None)
    run = uuid.uuid4().hex[:6]

    pool_dsn = settings.database_url
    orders, mrns = await seeded(settings, args.seed, args.patients)
    print(f"chaos run {run}: {args.orders} prior auths over {len(orders)} seeded orders,"
          f" {args.results} lab results; a kill every {args.every:.0f} s, each down {args.outage:.0f} s",
          flush=True)  # fmt: skip

    spread = args.every * len(KILLS)  # work keeps arriving through the first round of kills
    schedule = asyncio.create_task(chaos(stack, args.every, args.outage, args.rounds))
    t0 = time.monotonic()
    pa_ids, lab_keys = await asyncio.gather(
        start_prior_auths(settings, orders, args.orders, run, spread),
        send_results(settings, mrns, args.results, run, spread),
    )
    result = await schedule  # every kill done (and recovered from) before counting
    reviewed, alerted = await wait_done(pool_dsn, pa_ids, lab_keys, args.timeout)
    took = time.monotonic() - t0
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "starters", "dev", "up", "--no-check"],
                            capture_output=True, check=False)  # fmt: skip
    conn = await asyncpg.connect(pool_dsn)
    try:
        dups = await duplicates(conn, run, lab_keys)
        chain = await verify(conn)
    finally:
        await conn.close()
    await cleanup(settings, pa_ids, lab_keys)

    longest = max(result.outages, key=lambda o: o[1]) if result.outages else ("none", 0.0)
    total = len(pa_ids) + len(lab_keys)
    print(f"\nkills survived: {len(result.outages)} ({', '.join(sorted({o for o, _ in result.outages}))})")
    print(f"prior auths reaching review : {reviewed}/{len(pa_ids)}")
    print(f"lab results alerting        : {alerted}/{len(lab_keys)}")
    print(f"completed                   : {(reviewed + alerted) / total:.1%} of {total} in {took:.0f} s")
    for name, count in dups.items():
        print(f"{name:<28}: {count}")
    print(f"audit chain                 : {'intact' if chain.ok else 'BROKEN'} ({chain.rows_checked} rows)")
    print(f"longest outage survived     : {longest[1]:.1f} s ({longest[0]})")
    for failure in result.failures:
        print(f"  ! {failure}")
    ok = reviewed == len(pa_ids) and alerted == len(lab_keys) and not any(dups.values()) and chain.ok
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())

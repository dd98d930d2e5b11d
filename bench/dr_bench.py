"""Disaster recovery, measured (seed P20): the primary Postgres killed with SIGKILL under a prior-auth
batch and a lab-alert burst and failed over to its hot standby, synchronous and asynchronous replication
side by side; then a restore drill of a 100,000-chunk knowledge base.

Needs the stack after `make run` (its seeded EHR); the standby is brought up if it is not.  Each round:
the standby streaming in the round's mode, `--orders` prior auths and `--results` critical potassium
results arriving (resent while anything is down, as an EHR and a lab do), a ledger committing a row
every few milliseconds, the primary killed -9 mid-batch, DRFailoverWorkflow (automatic; forced when
asynchronous: accepting the loss nobody can measure is the operator's call) on this bench's own worker
with its real activities.  Then: every workflow done, RTO (kill to the first write on the new primary),
RPO (ledger rows whose commit was acknowledged before the kill and are missing after), duplicated FHIR
writes, and the audit chain on the new primary.  Between rounds, and at the end, DRFailbackWorkflow
brings the original site back as the primary with a standby.

    python -m bench.dr_bench --orders 50 --results 50
    python -m bench.dr_bench --rounds none --restore-chunks 100000     # the restore drill only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.dr import DrActivities
from bench.chaos import cleanup, duplicates, seeded, send_results, start_prior_auths, wait_done
from bench.rag_bench import add_synthetic
from careflow.audit.trail import verify
from careflow.config import Settings, load_settings
from careflow.db import endpoint, replication
from careflow.db.pool import create_pool
from careflow.dr import sites
from careflow.models.dr import FailoverInput, FailoverStage
from careflow.models.dr_failback import FailbackInput
from careflow.notify.notifier import Notifier
from careflow.security.logging import configure_logging
from careflow.security.temporal import connect
from starters.clients import dr as dr_client
from starters.devstack import standby as standby_stack
from workers.registry import sandbox_runner
from workflows.dr_failback import DRFailbackWorkflow
from workflows.dr_failover import DRFailoverWorkflow
from workflows.platform_canary import PlatformCanaryWorkflow


@dataclass
class Round:
    mode: str
    rto_s: float = 0.0
    acked: int = 0
    lost: int = 0
    reviewed: int = 0
    alerted: int = 0
    expected: int = 0
    took_s: float = 0.0
    dups: dict[str, int] = field(default_factory=dict)
    chain_ok: bool = False
    chain_rows: int = 0
    outcome: str = ""


class Ledger:
    """Commits one row at a time on the primary of the moment and remembers each acknowledged one."""

    def __init__(self, settings: Settings, run: str) -> None:
        self.settings, self.run, self.acked, self.stopped = settings, run, 0, asyncio.Event()
        self.ended_by = ""

    async def prepare(self) -> None:
        conn = await asyncpg.connect(endpoint.active_url(self.settings))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS dr_bench_ledger (run text, n int, PRIMARY KEY (run, n))"
            )
        finally:
            await conn.close()

    async def write(self) -> None:
        conn = await asyncpg.connect(endpoint.active_url(self.settings))
        try:
            while not self.stopped.is_set():
                await conn.execute("INSERT INTO dr_bench_ledger VALUES ($1, $2)", self.run, self.acked + 1)
                self.acked += 1  # acknowledged: the commit returned
                await asyncio.sleep(0.005)
        except Exception as exc:  # any client error here means the primary is gone: the ledger ends
            self.ended_by = type(exc).__name__
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def present(self) -> int:
        conn = await asyncpg.connect(endpoint.active_url(self.settings))
        try:
            return int(await conn.fetchval("SELECT count(*) FROM dr_bench_ledger WHERE run = $1 AND n <= $2",
                                           self.run, self.acked))  # fmt: skip
        finally:
            await conn.close()


async def ensure_standby(settings: Settings, synchronous: bool) -> None:
    primary_url, standby_url = sites.urls(settings)
    primary, standby = sites.cluster(settings, primary_url), sites.cluster(settings, standby_url)
    if standby.fence_file.exists() or not standby_stack.exists(standby):
        raise SystemExit(
            "the standby site is fenced or absent: `careflow dr failback` (or `dev up --standby`)"
        )
    if not standby.is_running():
        await asyncio.to_thread(standby.start)
    await replication.streaming(primary.dsn("postgres"))
    await replication.set_synchronous(primary.dsn("postgres"), synchronous)


async def one_round(
    client: Client,
    settings: Settings,
    queue: str,
    mode: str,
    orders: list[str],
    mrns: list[str],
    args: argparse.Namespace,
) -> Round:
    out, run = Round(mode), uuid.uuid4().hex[:6]
    synchronous = mode == "synchronous"
    await ensure_standby(settings, synchronous)
    primary = sites.cluster(settings, sites.urls(settings)[0])
    ledger = Ledger(settings, run)
    await ledger.prepare()
    writing = asyncio.create_task(ledger.write())
    t0 = time.monotonic()
    work = asyncio.gather(
        start_prior_auths(settings, orders, args.orders, run, args.spread),
        send_results(settings, mrns, args.results, run, args.spread),
    )
    await asyncio.sleep(args.kill_after)
    pid = primary.pid()
    assert pid is not None, "the primary is not running"
    os.kill(pid, signal.SIGKILL)
    killed = datetime.now(UTC)
    print(f"  [{mode}] primary (pid {pid}) killed {args.kill_after:.0f} s into the batch", flush=True)
    incident = f"bench-{run}-{mode[:5]}"
    started = await dr_client.start(client, FailoverInput(
        incident=incident, requested_by="dr-bench", reason="primary killed -9", detected_at=killed,
        automatic=True, force=not synchronous, search_attributes=True,
    ), task_queue=queue)  # fmt: skip
    done = await dr_client.result(client, started.workflow_id)
    ledger.stopped.set()
    await writing
    out.outcome = done.stage.value
    if done.stage is not FailoverStage.FAILED_OVER:
        print(f"  [{mode}] failover ended {done.stage.value}: {done.reason}")
        work.cancel()  # the batch cannot finish: its senders stop here
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        return out
    out.rto_s = done.recovery[0].rto_s if done.recovery else 0.0
    out.acked = ledger.acked
    out.lost = ledger.acked - await ledger.present()
    pa_ids, lab_keys = await work
    out.expected = len(pa_ids) + len(lab_keys)
    new_dsn = endpoint.active_url(settings)
    out.reviewed, out.alerted = await wait_done(new_dsn, pa_ids, lab_keys, args.timeout)
    out.took_s = time.monotonic() - t0
    conn = await asyncpg.connect(new_dsn)
    try:
        out.dups = await duplicates(conn, run, lab_keys)
        chain = await verify(conn)
        out.chain_ok, out.chain_rows = chain.ok, chain.rows_checked
    finally:
        await conn.close()
    await cleanup(settings, pa_ids, lab_keys)
    # The original site back as the primary, with a standby again, for the next round.
    fb = await dr_client.start_failback(client, FailbackInput(
        incident=incident, requested_by="dr-bench", return_now=True, synchronous=False,
    ), task_queue=queue)  # fmt: skip
    back = await dr_client.failback_settled(client, fb.workflow_id, timeout=600)
    print(f"  [{mode}] failback: {back.stage} ({back.reason})", flush=True)
    if back.stage != "returned":
        out.outcome = f"failback {back.stage}"  # the next round would find no standby
    return out


async def restore_drill(chunks: int) -> bool:
    """A backup and a restore drill of a cluster of its own holding `chunks` knowledge-base chunks
    (synthetic guideline text, vectors near real embeddings, the HNSW index maintained), through the
    stack's Temporal with a worker of its own."""
    from careflow.dr.store import FolderStore
    from careflow.kb import ingest
    from careflow.models.dr_backup import BackupInput
    from careflow.models.dr_drill import DrillInput
    from tests.support.dr_site import dr_site, dr_worker
    from tests.support.kb import STARTER
    from workflows.dr_backup import BackupWorkflow
    from workflows.dr_drill import DRDrillWorkflow

    client = await connect(load_settings())
    with tempfile.TemporaryDirectory(prefix="careflow-dr-bench-") as tmp:
        async with dr_site(Path(tmp)) as site:
            t = time.monotonic()
            # The starter guidelines (the golden questions' answers) among `chunks` synthetic ones.
            starter = await ingest.ingest_files(
                site.pool, "default", STARTER, [f.name for f in ingest.discover(STARTER)]
            )
            have = sum(r.chunks_written for r in starter)
            made_chunks, _ = await add_synthetic(site.pool, "default", max(chunks - have, 0), sample=200)
            made_chunks += have
            print(
                f"  knowledge base: {made_chunks} chunks written and indexed in {time.monotonic() - t:.1f} s"
            )
            store, notifier = FolderStore(Path(tmp) / "backups"), Notifier(site.pool, None)
            queue = f"dr-bench-restore-{uuid.uuid4().hex[:6]}"
            async with dr_worker(client, site, store, notifier, queue):
                t = time.monotonic()
                made = await client.execute_workflow(
                    BackupWorkflow.run, BackupInput(requested_by="dr-bench", search_attributes=False),
                    id=f"dr-backup-bench-{uuid.uuid4().hex[:6]}", task_queue=queue,
                )  # fmt: skip
                backup_s = time.monotonic() - t
                t = time.monotonic()
                drill = await client.execute_workflow(
                    DRDrillWorkflow.run, DrillInput(requested_by="dr-bench", search_attributes=False),
                    id=f"dr-drill-bench-{uuid.uuid4().hex[:6]}", task_queue=queue,
                )  # fmt: skip
                drill_s = time.monotonic() - t
            await notifier.aclose()
        c = drill.checks
        assert c is not None, drill.reason
        print(f"  backup: {made.outcome} in {backup_s:.1f} s, {made.bytes / 1e6:.1f} MB stored")
        print(f"  drill : {drill.outcome} in {drill_s:.1f} s; restore {c.restore_s:.1f} s "
              f"({c.bytes / 1e6:.1f} MB fetched and checked, {c.wal_files} WAL files), "
              f"{next(x.restored for x in c.counts if x.table == 'kb_chunks')} chunks restored, "
              f"golden recall {c.golden_recall} vs live {c.live_recall}")  # fmt: skip
        rag = next(o for o in drill.objectives if o.feature == "rag") if drill.objectives else None
        if rag:
            ratio = c.restore_s / rag.objective_rto_s
            print(f"  RAG's RTO {rag.objective_rto_s:.0f} s: the restore took {ratio:.3f}x of it")
        return made.outcome == "complete" and drill.outcome == "passed"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--orders", type=int, default=50)
    ap.add_argument("--results", type=int, default=50)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--spread", type=float, default=20.0, help="seconds over which the work arrives")
    ap.add_argument("--kill-after", type=float, default=8.0, help="seconds into the batch the primary dies")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--rounds", default="synchronous,asynchronous", help="modes, comma separated, or none")
    ap.add_argument("--restore-chunks", type=int, default=100_000, help="0: no restore drill")
    args = ap.parse_args()
    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    modes = [m for m in args.rounds.split(",") if m in ("synchronous", "asynchronous")]
    results: list[Round] = []
    if modes:
        orders, mrns = await seeded(settings, args.seed, args.patients)
        client = await connect(settings)
        queue = f"dr-bench-{uuid.uuid4().hex[:6]}"
        for mode in modes:
            # This bench's own worker runs the DR workflows, knowing the round's commit mode.
            mine = Settings(standby_synchronous=mode == "synchronous")
            pool = await create_pool(mine)
            async with Worker(
                client, task_queue=queue,
                workflows=[DRFailoverWorkflow, DRFailbackWorkflow, PlatformCanaryWorkflow],  # + its child
                activities=DrActivities(mine, pool, Notifier(pool, None)).all(),
                workflow_runner=sandbox_runner(),
            ):  # fmt: skip
                print(f"round {mode}: {args.orders} prior auths, {args.results} lab results", flush=True)
                results.append(await one_round(client, mine, queue, mode, orders, mrns, args))
            await pool.close()
        print("\n                      " + "".join(f"{r.mode:>16}" for r in results))
        rows = [
            ("failover", lambda r: r.outcome),
            ("RTO (kill -> write)", lambda r: f"{r.rto_s:.2f} s"),
            ("commits acknowledged", lambda r: str(r.acked)),
            ("RPO: of them lost", lambda r: str(r.lost)),
            ("workflows completed", lambda r: f"{r.reviewed + r.alerted}/{r.expected}"),
            ("batch took", lambda r: f"{r.took_s:.0f} s"),
            ("duplicate FHIR writes", lambda r: str(sum(r.dups.values()))),
            ("audit chain", lambda r: f"{'intact' if r.chain_ok else 'BROKEN'} ({r.chain_rows})"),
        ]
        for name, cell in rows:
            print(f"{name:<22}" + "".join(f"{cell(r):>16}" for r in results))
        print("objectives: RTO 5 min (lab alerts) .. 24 h; RPO 0 for lab alerts, prior auth, ambient notes")
    restored = True
    if args.restore_chunks:
        print(f"\nrestore drill of a {args.restore_chunks}-chunk knowledge base", flush=True)
        restored = await restore_drill(args.restore_chunks)
    ok = all(r.outcome == "failed-over" and r.reviewed + r.alerted == r.expected and not any(r.dups.values())
             and r.chain_ok and (r.lost == 0 or r.mode == "asynchronous") for r in results)  # fmt: skip
    raise SystemExit(0 if ok and restored else 1)


if __name__ == "__main__":
    asyncio.run(main())

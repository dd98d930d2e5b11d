"""Orchestration overhead of careflow's runtime against a bare temporalio worker.

Needs the embedded stack (`make bench` starts it).  For each runtime (careflow, bare) and 1 and 2 worker
processes it measures, on the same Temporal server:

- throughput: N one-activity workflows started at once, workflows/s until all complete;
- per-activity overhead: sequential workflows with 10 no-op activities against 0, (T10 - T0) / 10.

Figures are printed with the ratio careflow/bare and the headroom against the seed's most
demanding event rate (P7: 50 lab results/minute at peak, one workflow each).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from temporalio.client import Client

from bench.bench_workflow import BenchInput, BenchWorkflow
from bench.processes import start_ready_processes
from careflow.config import load_settings
from careflow.security.temporal import connect

PEAK_WORKFLOWS_PER_S = 50 / 60  # seed P7: 50 lab results per minute at peak


async def start_workers(mode: str, queue: str, count: int) -> list[asyncio.subprocess.Process]:
    return await start_ready_processes(["bench.bench_worker", mode, queue], count)


async def run_one(client: Client, queue: str, activities: int) -> float:
    t0 = time.perf_counter()
    await client.execute_workflow(
        BenchWorkflow.run, BenchInput(activities=activities), id=f"bench-{uuid.uuid4()}", task_queue=queue
    )
    return time.perf_counter() - t0


async def measure(client: Client, queue: str, n: int, seq: int) -> dict[str, float]:
    await asyncio.gather(*(run_one(client, queue, 1) for _ in range(10)))  # warm up caches/pollers
    t0 = time.perf_counter()
    await asyncio.gather(*(run_one(client, queue, 1) for _ in range(n)))
    throughput = n / (time.perf_counter() - t0)
    t_zero = [await run_one(client, queue, 0) for _ in range(seq)]
    t_ten = [await run_one(client, queue, 10) for _ in range(seq)]
    per_activity_ms = (statistics.median(t_ten) - statistics.median(t_zero)) / 10 * 1000
    return {
        "wf_per_s": throughput,
        "per_activity_ms": per_activity_ms,
        "wf0_ms": statistics.median(t_zero) * 1000,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workflows", type=int, default=200, help="concurrent workflows per throughput run")
    ap.add_argument("--sequential", type=int, default=15, help="sequential workflows per latency run")
    args = ap.parse_args()

    settings = load_settings()
    clients = {
        "careflow": await connect(settings),
        "bare": await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace),
    }
    results: dict[tuple[str, int], dict[str, float]] = {}
    for procs in (1, 2):
        for mode in ("bare", "careflow"):
            queue = f"bench-{mode}-{procs}-{uuid.uuid4().hex[:6]}"
            workers = await start_workers(mode, queue, procs)
            try:
                results[(mode, procs)] = await measure(clients[mode], queue, args.workflows, args.sequential)
            finally:
                for w in workers:
                    w.terminate()
                await asyncio.gather(*(w.wait() for w in workers))
            r = results[(mode, procs)]
            print(
                f"{mode:9s} {procs} proc: {r['wf_per_s']:7.1f} workflows/s   "
                f"{r['per_activity_ms']:6.1f} ms/activity   {r['wf0_ms']:6.1f} ms/empty workflow",
                flush=True,
            )

    print(
        f"\nserver {settings.temporal_address} (embedded dev server, SQLite)  "
        f"workflows={args.workflows} sequential={args.sequential}"
    )
    print(
        f"{'runtime':10s} {'procs':>5s} {'wf/s':>8s} {'ms/act':>8s} {'wf/s vs bare':>13s} "
        f"{'ms/act vs bare':>15s} {'wf/s / P7 peak':>15s}"
    )
    for (mode, procs), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        bare = results[("bare", procs)]
        print(
            f"{mode:10s} {procs:5d} {r['wf_per_s']:8.1f} {r['per_activity_ms']:8.1f} "
            f"{r['wf_per_s'] / bare['wf_per_s']:13.2f} "
            f"{r['per_activity_ms'] / bare['per_activity_ms']:15.2f} "
            f"{r['wf_per_s'] / PEAK_WORKFLOWS_PER_S:14.1f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())

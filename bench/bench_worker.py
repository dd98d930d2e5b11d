"""`python -m bench.bench_worker careflow|bare QUEUE`: one benchmark worker process.

careflow: careflow's runtime (pydantic converter + AES-GCM codec + structlog + explicit limits).
bare:     a plain temporalio Worker with the SDK's default converter and settings.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from bench.bench_workflow import BenchWorkflow, noop
from careflow.config import load_settings
from careflow.security.logging import configure_logging
from workers.main import run_worker


async def bare(queue: str) -> None:
    s = load_settings()
    client = await Client.connect(s.temporal_address, namespace=s.temporal_namespace)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Worker(client, task_queue=queue, workflows=[BenchWorkflow], activities=[noop]):
        print("READY", flush=True)
        await stop.wait()


if __name__ == "__main__":
    mode, queue = sys.argv[1], sys.argv[2]
    if mode == "bare":
        asyncio.run(bare(queue))
    else:
        settings = load_settings()
        configure_logging("WARNING", "json")
        asyncio.run(
            run_worker(
                settings,
                queue,
                workflows=[BenchWorkflow],
                activities=lambda c: [noop],
                ready=lambda: print("READY", flush=True),
            )
        )

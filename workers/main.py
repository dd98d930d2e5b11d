"""`careflow worker --task-queue Q`: one worker process on one task queue.

Several processes on one queue share its work.  SIGTERM/SIGINT stop polling and drain: in-flight
activities get `worker_graceful_shutdown_seconds` to finish before they are cancelled.  Prometheus
metrics of the SDK are served on `--metrics-port` when given.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Sequence
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.security.logging import get_logger
from careflow.security.temporal import connect
from workers.pipeline import ActivityFactory, ProcessClients
from workers.registry import activities_for, activity_slots, sandbox_runner, workflows_for

log = get_logger("careflow.worker")


def default_identity(task_queue: str) -> str:
    return f"{task_queue}@{socket.gethostname()}:{os.getpid()}"


async def run_worker(
    settings: Settings,
    task_queue: str,
    *,
    identity: str | None = None,
    metrics_port: int | None = None,
    workflows: Sequence[type] | None = None,
    activities: ActivityFactory | None = None,
    slots: int | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then drain.  `workflows`/`activities`/`slots` replace the registry's:
    `slots` is how many activities run at once (the queue's declaration, else the setting)."""
    identity = identity or default_identity(task_queue)
    # The SDK appends whole info dicts to messages by default; our processors add the ids instead.
    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False

    runtime = None
    if metrics_port is not None:
        runtime = Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{metrics_port}"))
        )
    client = await connect(settings, identity=identity, runtime=runtime)
    pool = await create_pool(settings)
    clients = ProcessClients(settings, pool, client.data_converter.payload_codec, identity)
    acts = list(activities(clients)) if activities else activities_for(task_queue, clients)
    wfs = list(workflows) if workflows is not None else workflows_for(task_queue)
    slots = slots or activity_slots(task_queue) or settings.worker_max_concurrent_activities

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=wfs,
        activities=acts,
        identity=identity,
        max_concurrent_activities=slots,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_graceful_shutdown_seconds),
        workflow_runner=sandbox_runner(),
    )
    try:
        async with worker:
            log.info(
                "worker started",
                task_queue=task_queue,
                identity=identity,
                metrics_port=metrics_port,
                workflows=[w.__name__ for w in wfs],
                activity_count=len(acts),
                activity_slots=slots,
            )
            if ready:
                ready()
            await stop.wait()
            log.info(
                "worker draining",
                task_queue=task_queue,
                identity=identity,
                grace_seconds=settings.worker_graceful_shutdown_seconds,
            )
    finally:
        await pool.close()
    log.info("worker stopped", task_queue=task_queue, identity=identity)

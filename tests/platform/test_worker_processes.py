"""Worker processes for real: two share a queue and survive a kill -9; SIGTERM drains."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.support.hold import HoldInput, HoldWorkflow
from tests.support.processes import start_ready
from tests.support.wait import wait_until


async def start_worker(queue: str, slots: int | None = None) -> asyncio.subprocess.Process:
    return await start_ready("hold_worker", queue, *([str(slots)] if slots else []), stderr=subprocess.PIPE)


@pytest.fixture
async def workers(settings, task_queue: str) -> AsyncIterator[list[asyncio.subprocess.Process]]:  # type: ignore[no-untyped-def]
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for p in procs:
        if p.returncode is None:
            p.kill()
            await p.wait()


async def test_kill_9_the_busy_worker_the_other_finishes(
    client: Client, task_queue: str, workers: list, tmp_path: Path
) -> None:
    workers += [await start_worker(task_queue), await start_worker(task_queue)]
    handle = await client.start_workflow(
        HoldWorkflow.run,
        HoldInput(seconds=3, marker_dir=str(tmp_path)),
        id=f"hold-{uuid.uuid4()}",
        task_queue=task_queue,
    )
    marker = await wait_until(lambda: list(tmp_path.glob("started-1-*")), what="first attempt to start")
    busy_pid = int(marker[0].name.rsplit("-", 1)[1])
    assert busy_pid in {p.pid for p in workers}
    os.kill(busy_pid, signal.SIGKILL)

    result = await asyncio.wait_for(handle.result(), timeout=60)
    survivor = next(p.pid for p in workers if p.pid != busy_pid)
    assert result.pid == survivor
    assert result.attempt >= 2


async def test_sigterm_drains_the_running_activity(
    client: Client, task_queue: str, workers: list, tmp_path: Path
) -> None:
    worker = await start_worker(task_queue)
    workers.append(worker)
    handle = await client.start_workflow(
        HoldWorkflow.run,
        HoldInput(seconds=2, marker_dir=str(tmp_path)),
        id=f"hold-{uuid.uuid4()}",
        task_queue=task_queue,
    )
    await wait_until(lambda: list(tmp_path.glob("started-1-*")), what="activity to start")
    worker.send_signal(signal.SIGTERM)
    rc = await asyncio.wait_for(worker.wait(), timeout=60)
    assert rc == 0
    # The activity finished on the stopping worker, first attempt: drained, not abandoned.
    # A fresh worker completes the workflow task that the activity result produced.
    workers.append(await start_worker(task_queue))
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert (result.pid, result.attempt) == (worker.pid, 1)
    assert worker.stderr is not None
    logs = (await worker.stderr.read()).decode()
    assert "worker draining" in logs and "worker stopped" in logs


@pytest.mark.parametrize("slots", [1, None])
async def test_a_worker_runs_only_as_many_activities_at_once_as_its_slots(
    client: Client, task_queue: str, workers: list, tmp_path: Path, slots: int | None
) -> None:
    """A queue that declares one slot (careflow-stt: a decoding uses every core) gets one activity at
    a time per worker process; the others wait in Temporal's queue, none fails.  Without it they overlap."""
    workers.append(await start_worker(task_queue, slots))
    handles = [
        await client.start_workflow(
            HoldWorkflow.run,
            HoldInput(seconds=1, marker_dir=str(tmp_path)),
            id=f"hold-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        for _ in range(3)
    ]
    runs = sorted([await asyncio.wait_for(h.result(), timeout=60) for h in handles], key=lambda r: r.started)
    assert [r.attempt for r in runs] == [1, 1, 1]
    overlapped = any(b.started < a.ended for a, b in itertools.pairwise(runs))
    assert overlapped == (slots is None)

"""The canary against a real worker: healthy when every queue answers, a dead queue reported."""

import uuid

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.models.platform import CanaryInput
from careflow.security.temporal import data_converter
from starters.clients.canary import run_canary
from tests.conftest import BIN
from workers.registry import ProcessClients, activities_for, sandbox_runner
from workflows.platform_canary import PlatformCanaryWorkflow

pytestmark = pytest.mark.stack  # starts servers of its own


async def test_canary_probes_each_queue(
    time_skipping: WorkflowEnvironment, database_url: str, task_queue: str
) -> None:
    client = time_skipping.client
    pool = await create_pool(Settings())
    clients = ProcessClients(Settings(), pool, client.data_converter.payload_codec, "w-under-test")
    other_queue = task_queue + "-b"
    try:
        async with (
            Worker(
                client,
                task_queue=task_queue,
                workflows=[PlatformCanaryWorkflow],
                activities=activities_for(task_queue, clients),
                workflow_runner=sandbox_runner(),
            ),
            Worker(client, task_queue=other_queue, activities=activities_for(other_queue, clients)),
        ):
            out = await client.execute_workflow(
                PlatformCanaryWorkflow.run,
                CanaryInput(
                    task_queues=[task_queue, other_queue, "nobody-polls-this"], probe_timeout_seconds=5
                ),
                id=f"canary-{uuid.uuid4()}",
                task_queue=task_queue,
            )
        # the probe row is written by natural key
        async with pool.acquire() as conn:
            rows = await conn.fetchval("SELECT count(*) FROM platform_probes WHERE worker = 'w-under-test'")
    finally:
        await pool.close()

    assert not out.healthy
    assert {p.task_queue for p in out.probes} == {task_queue, other_queue}
    for p in out.probes:
        assert p.database_ok and p.pgvector_version and p.pgvector_version.startswith("0.8")
        assert p.codec_ok and p.codec_key_id == "test-1"
        assert p.worker_identity == "w-under-test"
    assert list(out.unreachable) == ["nobody-polls-this"]
    assert "Timeout" in out.unreachable["nobody-polls-this"]
    assert rows >= 2


async def test_canary_healthy_when_all_queues_answer(
    time_skipping: WorkflowEnvironment, database_url: str, task_queue: str
) -> None:
    client = time_skipping.client
    pool = await create_pool(Settings())
    clients = ProcessClients(Settings(), pool, client.data_converter.payload_codec, "w")
    try:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[PlatformCanaryWorkflow],
            activities=activities_for(task_queue, clients),
            workflow_runner=sandbox_runner(),
        ):
            out = await client.execute_workflow(
                PlatformCanaryWorkflow.run, CanaryInput(), id=f"canary-{uuid.uuid4()}", task_queue=task_queue
            )
    finally:
        await pool.close()
    assert out.healthy and out.unreachable == {} and [p.task_queue for p in out.probes] == [task_queue]


async def test_a_queue_nobody_serves_is_reported_not_raised() -> None:
    # `careflow dev up --workers 0` once ended in a traceback: the canary itself had no worker.  A
    # server of its own: a workflow timing out unattended upsets the shared server's time skipping.
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=data_converter(Settings()), test_server_existing_path=str(BIN / "temporal-test-server")
    )
    try:
        queue = f"unserved-{uuid.uuid4().hex[:8]}"
        out = await run_canary(env.client, [queue], probe_timeout=1)
    finally:
        await env.shutdown()
    assert not out.healthy and not out.probes
    assert out.unreachable[queue].startswith("no worker ran the canary within 33 s")
